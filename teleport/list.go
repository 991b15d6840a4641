package teleport

import (
	"context"
	"fmt"

	"github.com/gravitational/teleport/api/client/proto"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
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

// DatabaseServers counts the agents serving each db resource carrying labels
// (ListResources of db_server, filtered by Teleport on the db's labels).
// Each heartbeat carries a whole copy of its db resource, CA included: the
// pages are small, counted one at a time, and of each heartbeat only its
// db's name is decoded (make bench: thousands of heartbeats every check).
func (c *APIClient) DatabaseServers(ctx context.Context, labels map[string]string) (map[string]int, error) {
	out := map[string]int{}
	limit := int32(serverPage)
	for key := ""; ; {
		req := proto.ListResourcesRequest{ResourceType: types.KindDatabaseServer, Labels: labels, StartKey: key, Limit: limit}
		if err := req.CheckAndSetDefaults(); err != nil {
			return nil, c.wrap(err, "teleport: list db_server")
		}
		var page serverList
		err := trail.FromGRPC(c.api.GetConnection().Invoke(ctx, "/proto.AuthService/ListResources", &req, &page))
		if trace.IsLimitExceeded(err) && limit > 1 { // a page over gRPC's message size: halve it
			limit /= 2
			continue
		}
		if err != nil {
			return nil, c.wrap(err, "teleport: list db_server")
		}
		for _, name := range page.dbs {
			out[name]++
		}
		if key = page.next; key == "" || page.resources == 0 {
			return out, nil
		}
	}
}

// serverPage is how many db_server heartbeats one page of DatabaseServers asks for.
const serverPage = 100

// serverList is a proto.ListResourcesResponse of db_server heartbeats of
// which only each heartbeat's db name is decoded.
type serverList struct {
	dbs       []string // the db each db_server heartbeat serves
	resources int      // resources in the page, of any kind
	next      string
}

func (p *serverList) Reset()         { *p = serverList{} }
func (p *serverList) String() string { return fmt.Sprintf("%d resources", p.resources) }
func (*serverList) ProtoMessage()    {}

// Field numbers, from authservice.proto and types.proto:
// ListResourcesResponse.Resources and .NextKey, PaginatedResource's
// DatabaseServer, DatabaseServerV3.Spec, DatabaseServerSpecV3.Database,
// Metadata.Name.
const (
	fieldResources      = 1
	fieldNextKey        = 2
	fieldDatabaseServer = 1
	fieldServerSpec     = 5
	fieldServerDatabase = 12
	fieldName           = 1
)

// Unmarshal decodes a ListResourcesResponse down to the names of the dbs
// its db_server heartbeats serve, skipping every other field.
func (p *serverList) Unmarshal(b []byte) error {
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldNextKey:
			p.next = string(v)
		case fieldResources:
			p.resources++
			name, err := path(v, fieldDatabaseServer, fieldServerSpec, fieldServerDatabase, fieldMetadata, fieldName)
			if err != nil {
				return err
			}
			if name != nil {
				p.dbs = append(p.dbs, string(name))
			}
		}
		return nil
	})
}

// path follows the length-delimited fields nums from the message b and
// returns the last one's bytes (nil when one is absent; Teleport writes
// each of these fields once).
func path(b []byte, nums ...protowire.Number) ([]byte, error) {
	for _, want := range nums {
		var found []byte
		if err := fields(b, func(num protowire.Number, v []byte) error {
			if num == want {
				found = v
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if found == nil {
			return nil, nil
		}
		b = found
	}
	return b, nil
}
