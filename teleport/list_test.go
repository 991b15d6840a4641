package teleport

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/gravitational/teleport/api/client/proto"
	"github.com/gravitational/teleport/api/types"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestMetaList: the list decoder keeps each db's name and labels from what
// gogo's DatabaseV3List encodes, whatever else a db carries, and fails on a
// truncated answer rather than returning part of it.
func TestMetaList(t *testing.T) {
	var list types.DatabaseV3List
	for _, d := range []struct {
		name   string
		labels map[string]string
		ca     string
	}{
		{"a-rw", map[string]string{"cnpg-teleport.io/cluster": "a", "team": "x"}, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
		{"b", nil, ""},
		{"c-ro", map[string]string{"k": ""}, "x"},
	} {
		db, err := types.NewDatabaseV3(types.Metadata{Name: d.name, Labels: d.labels, Description: "d"},
			types.DatabaseSpecV3{Protocol: "postgres", URI: d.name + ":5432", TLS: types.DatabaseTLS{Mode: types.DatabaseTLSMode_VERIFY_FULL, CACert: d.ca}})
		if err != nil {
			t.Fatal(err)
		}
		list.Databases = append(list.Databases, db)
	}
	b, err := list.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// A field this decoder does not know (a varint, as a newer Teleport
	// might add) is skipped.
	b = protowire.AppendVarint(protowire.AppendTag(b, 9, protowire.VarintType), 7)

	var got metaList
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if len(got.dbs) != len(list.Databases) {
		t.Fatalf("%d dbs, want %d", len(got.dbs), len(list.Databases))
	}
	for i, want := range list.Databases {
		g := got.dbs[i]
		if g.GetName() != want.GetName() || !maps.Equal(g.GetStaticLabels(), want.GetStaticLabels()) {
			t.Errorf("db %d = %s %v, want %s %v", i, g.GetName(), g.GetStaticLabels(), want.GetName(), want.GetStaticLabels())
		}
	}

	for _, cut := range []int{1, len(b) / 2, len(b) - 3} {
		var part metaList
		if err := part.Unmarshal(b[:cut]); err == nil {
			t.Errorf("cut at %d of %d: no error, %d dbs", cut, len(b), len(part.dbs))
		}
	}
}

// TestServerList: of a page of heartbeats (gogo's ListResourcesResponse),
// the decoder keeps the db name of each db_server, counts every resource,
// keeps the next key, and fails on a truncated page.
func TestServerList(t *testing.T) {
	var resp proto.ListResourcesResponse
	for i, name := range []string{"a-rw", "a-rw", "b-ro"} {
		db, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: map[string]string{"k": "v"}},
			types.DatabaseSpecV3{Protocol: "postgres", URI: name + ":5432", TLS: types.DatabaseTLS{CACert: "ca"}})
		if err != nil {
			t.Fatal(err)
		}
		s, err := types.NewDatabaseServerV3(types.Metadata{Name: name}, types.DatabaseServerSpecV3{
			HostID: fmt.Sprintf("host-%d", i), Hostname: "agent", Database: db,
		})
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &proto.PaginatedResource{Resource: &proto.PaginatedResource_DatabaseServer{DatabaseServer: s}})
	}
	app, err := types.NewAppServerV3(types.Metadata{Name: "app"}, types.AppServerSpecV3{
		HostID: "h", Hostname: "agent", App: &types.AppV3{Metadata: types.Metadata{Name: "app"}, Spec: types.AppSpecV3{URI: "http://x"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Resources = append(resp.Resources, &proto.PaginatedResource{Resource: &proto.PaginatedResource_AppServer{AppServer: app}})
	resp.NextKey, resp.TotalCount = "next/key", 9
	b, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got serverList
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.dbs, []string{"a-rw", "a-rw", "b-ro"}) || got.resources != 4 || got.next != "next/key" {
		t.Fatalf("decoded %v, %d resources, next %q", got.dbs, got.resources, got.next)
	}
	for _, cut := range []int{1, len(b) / 2, len(b) - 1} {
		var part serverList
		if err := part.Unmarshal(b[:cut]); err == nil {
			t.Errorf("cut at %d of %d: no error, %v", cut, len(b), part.dbs)
		}
	}
}
