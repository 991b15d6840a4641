package teleport

import (
	"context"
	"fmt"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace/trail"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"
)

// DatabaseMeta is what a list of db resources returns: each one's name and
// labels (the ownership labels are all a list is read for), not its spec
// nor its status. A decoded types.DatabaseV3 is a 2.8 KB struct before its
// CA certificate: a list of every db resource of a shared Teleport decoded
// whole was the controller's largest burst of live memory (make bench:
// 7,440 db resources at once in every orphan pass).
type DatabaseMeta struct {
	Name   string
	Labels map[string]string
}

// GetName is the db resource's name.
func (d DatabaseMeta) GetName() string { return d.Name }

// GetStaticLabels are its labels (a db resource's metadata labels are its
// static labels).
func (d DatabaseMeta) GetStaticLabels() map[string]string { return d.Labels }

// ListDatabases lists the db resources the identity may see, by name and
// labels. It is Teleport's GetDatabases, with only each resource's metadata
// decoded from the answer.
func (c *APIClient) ListDatabases(ctx context.Context) ([]DatabaseMeta, error) {
	var list metaList
	if err := c.api.GetConnection().Invoke(ctx, "/proto.AuthService/GetDatabases", &emptypb.Empty{}, &list); err != nil {
		return nil, c.wrap(trail.FromGRPC(err), "teleport: list db")
	}
	return list.dbs, nil
}

// metaList is a types.DatabaseV3List of which only each db's metadata is
// decoded (gRPC's proto codec calls its Unmarshal, as it does gogo's).
type metaList struct{ dbs []DatabaseMeta }

func (l *metaList) Reset()         { l.dbs = nil }
func (l *metaList) String() string { return fmt.Sprintf("%d db resources", len(l.dbs)) }
func (*metaList) ProtoMessage()    {}

// Field numbers, from types.proto: DatabaseV3List.Databases,
// DatabaseV3.Metadata.
const (
	fieldDatabases = 1
	fieldMetadata  = 4
)

// Unmarshal decodes a DatabaseV3List: for each DatabaseV3 its Metadata
// (types.Metadata's own decoder), skipping every other field.
func (l *metaList) Unmarshal(b []byte) error {
	return fields(b, func(num protowire.Number, db []byte) error {
		if num != fieldDatabases {
			return nil
		}
		var m types.Metadata
		if err := fields(db, func(num protowire.Number, v []byte) error {
			if num != fieldMetadata {
				return nil
			}
			return m.Unmarshal(v)
		}); err != nil {
			return err
		}
		l.dbs = append(l.dbs, DatabaseMeta{Name: m.Name, Labels: m.Labels})
		return nil
	})
}

// fields calls f with each length-delimited field of the message b and
// skips the others.
func fields(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if err := f(num, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
