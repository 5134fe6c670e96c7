package topicsel

import "testing"

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		include, exclude []string
		yes, no          []string
	}{
		{nil, nil, []string{"orders", "a.b"}, []string{"__consumer_offsets", "__x"}},
		{[]string{".*"}, nil, []string{"orders"}, []string{"__consumer_offsets"}},
		{[]string{"orders"}, nil, []string{"orders"}, []string{"orders2", "xorders", "payments"}},
		{[]string{`orders\..*`, "payments"}, []string{`.*\.tmp`}, []string{"orders.eu", "payments"}, []string{"orders.eu.tmp", "orders"}},
		{nil, []string{"pay.*"}, []string{"orders"}, []string{"payments", "__consumer_offsets"}},
		{[]string{"__consumer_offsets"}, nil, []string{"__consumer_offsets"}, []string{"orders", "__transaction_state"}},
		{[]string{"__.*", "orders"}, nil, []string{"__consumer_offsets", "orders"}, []string{"payments"}},
		{[]string{"(__consumer_offsets)"}, nil, nil, []string{"__consumer_offsets"}}, // must start with __ itself
		{[]string{"a|b"}, nil, []string{"a", "b"}, []string{"ab", "a|b"}},            // alternation stays anchored
	} {
		s, err := Compile(tc.include, tc.exclude)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tc.yes {
			if !s.Match(n) {
				t.Errorf("%v/%v: %q not selected", tc.include, tc.exclude, n)
			}
		}
		for _, n := range tc.no {
			if s.Match(n) {
				t.Errorf("%v/%v: %q selected", tc.include, tc.exclude, n)
			}
		}
	}
}

func TestCompile(t *testing.T) {
	t.Parallel()
	if s, err := Compile(nil, []string{""}); s != nil || err != nil {
		t.Fatalf("empty: %v %v", s, err)
	}
	if _, err := Compile([]string{"("}, nil); err == nil {
		t.Fatal("invalid include accepted")
	}
	if _, err := Compile(nil, []string{"[z-a]"}); err == nil {
		t.Fatal("invalid exclude accepted")
	}
	s, _ := Compile([]string{"a", "b.*"}, []string{"c"})
	if got := s.Patterns(); len(got) != 2 || got[0] != "^(?:a)$" || got[1] != "^(?:b.*)$" {
		t.Fatalf("patterns %v", got)
	}
	if got := s.String(); got != "topics a, b.*, excluding c" {
		t.Fatalf("String %q", got)
	}
	var none *Selector
	if got := none.Patterns(); len(got) != 1 || got[0] != ".*" || none.String() != "every non-internal topic" {
		t.Fatalf("nil selector: %v %q", got, none.String())
	}
}

// TestKeyAndFlags: the canonical key of one include expression is its
// anchored form (restore ids of earlier versions hashed exactly that).
func TestKeyAndFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		include, exclude []string
		key, flags       string
	}{
		{nil, nil, "<all>", "--topics <all>"},
		{[]string{"orders|pay.*"}, nil, "^(?:orders|pay.*)$", "--topics orders|pay.*"},
		{[]string{"a", "b"}, []string{"c"}, `include ["^(?:a)$" "^(?:b)$"] exclude ["^(?:c)$"]`, "--topics a --topics b --exclude c"},
		{nil, []string{"c"}, `include [] exclude ["^(?:c)$"]`, "--exclude c"},
	} {
		s, err := Compile(tc.include, tc.exclude)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Key(); got != tc.key {
			t.Errorf("Key(%v, %v) = %s, want %s", tc.include, tc.exclude, got, tc.key)
		}
		if got := s.Flags(); got != tc.flags {
			t.Errorf("Flags(%v, %v) = %s, want %s", tc.include, tc.exclude, got, tc.flags)
		}
	}
}
