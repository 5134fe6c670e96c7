package restore

import (
	"testing"

	"github.com/kbackup/kbackup/internal/logrange"
)

// TestRestoreIDPinned: the id derived from a request stays what earlier
// versions derived (with --topics a regular expression), so that a rerun
// after an upgrade resumes the same restore. These ids were computed by
// kbackup before --topics became a topicsel.Selector.
func TestRestoreIDPinned(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cluster string
		o       Options
		request string
		id      string
	}{
		{"cluster-7", Options{Topics: mustSel(t, "orders|pay.*"), Partitions: []int32{3, 0},
			Range:  logrange.Range{FromOffset: 5, ToTime: 1700000000000, HasToTime: true},
			Rename: map[string]string{"orders": "orders-restored"}, Append: true},
			`topics="^(?:orders|pay.*)$";partitions=[0 3];range=offsets 5.., time ..2023-11-14T22:13:20.000Z;rename=["orders=orders-restored"];append=true;repartition=false`,
			"r-3d3fef6706d40a87"},
		{"", Options{Topics: mustSel(t, "orders")},
			`topics="^(?:orders)$";partitions=[];range=offsets 0..;rename=[];append=false;repartition=false`,
			"r-403ea7927e5f1fb1"},
	} {
		if got := tc.o.requestString(); got != tc.request {
			t.Errorf("request %s\nwant    %s", got, tc.request)
		}
		if got := deriveID(tc.cluster, tc.o.requestString()); got != tc.id {
			t.Errorf("id %s, want %s", got, tc.id)
		}
	}
}
