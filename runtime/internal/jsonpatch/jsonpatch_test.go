package jsonpatch

import "testing"

func TestApplierFollowsRFC6902(t *testing.T) {
	doc := []byte(`{"a":[1,2],"b":{"c/d":1,"e~f":2}}`)
	for _, c := range []struct{ patch, want string }{
		{`[{"op":"add","path":"/a/0","value":0}]`, `{"a":[0,1,2],"b":{"c/d":1,"e~f":2}}`},
		{`[{"op":"add","path":"/a/-","value":3}]`, `{"a":[1,2,3],"b":{"c/d":1,"e~f":2}}`},
		{`[{"op":"add","path":"/b/c~1d","value":9}]`, `{"a":[1,2],"b":{"c/d":9,"e~f":2}}`},
		{`[{"op":"remove","path":"/b/e~0f"}]`, `{"a":[1,2],"b":{"c/d":1}}`},
		{`[{"op":"replace","path":"/a/1","value":5}]`, `{"a":[1,5],"b":{"c/d":1,"e~f":2}}`},
	} {
		got, err := Apply(doc, []byte(c.patch))
		if err != nil || string(got) != c.want {
			t.Errorf("%s: %s %v", c.patch, got, err)
		}
	}
	for _, bad := range []string{
		`[{"op":"add","path":"/x/y","value":1}]`,
		`[{"op":"add","path":"/a/3","value":1}]`,
		`[{"op":"replace","path":"/a/-","value":1}]`,
		`[{"op":"remove","path":"/zz"}]`,
		`[{"op":"test","path":"/a/0","value":2}]`,
		`[{"op":"move","path":"/a"}]`,
	} {
		if _, err := Apply(doc, []byte(bad)); err == nil {
			t.Errorf("%s applied", bad)
		}
	}
}
