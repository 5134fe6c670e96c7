package docs

// Runners for the snapshot examples' kinds (snapshot-config, cronjob,
// dockerfile, systemd-timer) and the helpers their specs use.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"

	"github.com/kbackup/kbackup/internal/doctest"
	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/testenv"
)

// snapState is what the snapshot examples' specs share within one doc file.
type snapState struct {
	volumes map[string]string // EBS volume id in the docs -> the moto volume standing for it
	api     *ec2.Client       // moto's EC2 API, in the configuration's region
	pids    map[int32]int     // broker pids before a block that restarts them
	vols    map[string]string // moto's volumes (id -> instance) before a block
	failed  string            // the failed cycle made for prune to delete
	cycle   string            // the cycle a restore example restores
	atCycle []testenv.Record  // orders as the restored cycle holds it
	perPart int               // its records per partition
	want    []testenv.Record  // orders as produced (offsets included) before the restore

	image, imageVersion string // the hooks' image (the Dockerfile's first line) and its kbackup version
	user                string // the image's USER
}

// snapshotConfigPath is where the examples' configuration lives (before
// substitution: /etc/kbackup/snapshot.yaml).
func (e *docEnv) snapshotConfigPath() string {
	return filepath.Join(e.tmp, "etc", "kbackup", "snapshot.yaml")
}

// dataDir maps broker n's documented data directory to the test broker's.
func (e *docEnv) dataDir(n string) string {
	id, err := strconv.Atoi(n)
	d := ""
	if err == nil {
		d = e.k.Cluster().DataDir(int32(id))
	}
	if d == "" {
		e.t.Fatalf("/var/lib/kafka/%s: the test cluster has no broker %s", n, n)
	}
	return d
}

// volume maps a documented EBS volume id to the moto volume made for it.
func (e *docEnv) volume(docID string) string {
	v, ok := e.snap.volumes[docID]
	if !ok {
		e.t.Fatalf("EBS volume id %s: no moto volume stands for it (the config block's spec makes them)", docID)
	}
	return v
}

// cycleDoc is one cycle of `snapshot list --json`.
type cycleDoc struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Mode      string `json:"mode"`
	Bytes     int64  `json:"bytes"`
	Snapshots int    `json:"snapshots"`
	Reason    string `json:"reason"`
}

// cycles lists the cycles of the examples' configuration, newest first.
func (e *docEnv) cycles() []cycleDoc {
	e.t.Helper()
	r := e.kbackup("snapshot", "list", "--config", e.snapshotConfigPath(), "--json")
	if r.code != 0 {
		e.t.Fatalf("snapshot list: exit %d: %s", r.code, r.stderr)
	}
	return parseCycles(e, r.stdout)
}

func parseCycles(e *docEnv, out string) []cycleDoc {
	e.t.Helper()
	var doc struct {
		Schema string     `json:"schema"`
		Cycles []cycleDoc `json:"cycles"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Schema != "kbackup.snapshot-list/v1" {
		e.t.Fatalf("snapshot list --json: %v (schema %q)\n%s", err, doc.Schema, out)
	}
	return doc.Cycles
}

// newestCompleteCycle is what a documented cycle id stands for: the newest
// complete cycle that `snapshot list` shows when the command runs.
func (e *docEnv) newestCompleteCycle() string {
	e.t.Helper()
	for _, c := range e.cycles() {
		if c.State == snapshot.StateComplete {
			return c.ID
		}
	}
	e.t.Fatal("a cycle id placeholder, but the configuration has no complete cycle")
	return ""
}

// brokerPids returns every broker's pid (0: not running).
func (e *docEnv) brokerPids() map[int32]int {
	out := map[int32]int{}
	for _, id := range e.k.Cluster().BrokerIDs() {
		out[id] = e.k.Cluster().Pid(id)
	}
	return out
}

// restarted checks that every broker runs again under a new process since
// e.snap.pids, that the shims stopped and started each once, and that the
// cluster is healthy.
func (e *docEnv) restarted(what string) {
	e.t.Helper()
	stops, starts := map[int32]int{}, map[int32]int{}
	for _, c := range e.hosts.takeCalls() {
		if c.Verb == "stop" {
			stops[c.Broker]++
		} else {
			starts[c.Broker]++
		}
	}
	for id, before := range e.snap.pids {
		now := e.k.Cluster().Pid(id)
		if now == 0 || now == before || stops[id] != 1 || starts[id] != 1 {
			e.t.Fatalf("%s: broker %d: pid %d before, %d now; %d stops and %d starts through the hooks (want a restart: 1 and 1)",
				what, id, before, now, stops[id], starts[id])
		}
	}
	e.k.WaitInSync(e.t, 2*time.Minute)
}

// startEC2 starts moto (always a fresh one: the example finds volumes by
// fixed tags) and makes what the EBS configuration names: three instances
// in eu-west-1, each with a 100 GiB gp3 volume at /dev/sdf; broker 1's stands
// for the documented volume id, brokers 2 and 3's carry the documented tags.
func (e *docEnv) startEC2(region, docVolume string, tagKey string) {
	e.t.Helper()
	m := testenv.NewMoto(e.t)
	e.ec2 = &m
	api := ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(m.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, "")})
	e.snap.api = api
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	imgs, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(imgs.Images) == 0 {
		e.t.Fatalf("moto images: %v", err)
	}
	zone := region + "a"
	for id := int32(1); id <= 3; id++ {
		ri, err := api.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType: types.InstanceTypeR6iLarge, Placement: &types.Placement{AvailabilityZone: aws.String(zone)}})
		if err != nil {
			e.t.Fatal(err)
		}
		tags := []types.Tag{{Key: aws.String("Name"), Value: aws.String(fmt.Sprintf("kafka-%d-data", id))}}
		if id > 1 {
			tags = append(tags, types.Tag{Key: aws.String(tagKey), Value: aws.String(fmt.Sprint(id))})
		}
		cv, err := api.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(100), VolumeType: types.VolumeTypeGp3,
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tags}}})
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := api.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: cv.VolumeId, InstanceId: ri.Instances[0].InstanceId, Device: aws.String("/dev/sdf")}); err != nil {
			e.t.Fatal(err)
		}
		if id == 1 {
			e.snap.volumes[docVolume] = aws.ToString(cv.VolumeId)
		}
	}
}

// ec2Snapshots returns moto's snapshots with their tags, by id.
func (e *docEnv) ec2Snapshots() map[string]map[string]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.snap.api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]map[string]string{}
	for _, s := range out.Snapshots {
		tags := map[string]string{}
		for _, t := range s.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		m[aws.ToString(s.SnapshotId)] = tags
	}
	return m
}

// ec2Volumes returns moto's volumes: id -> attached instance ("" if none).
func (e *docEnv) ec2Volumes() map[string]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.snap.api.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]string{}
	for _, v := range out.Volumes {
		m[aws.ToString(v.VolumeId)] = ""
		if len(v.Attachments) > 0 {
			m[aws.ToString(v.VolumeId)] = aws.ToString(v.Attachments[0].InstanceId)
		}
	}
	return m
}

// runSnapshotConfig writes a snapshot-config block to its path= and loads
// it as `kbackup snapshot` does (strict decoding and validation).
func (e *docEnv) runSnapshotConfig(b doctest.Block) *blockRun {
	e.t.Helper()
	dst := e.writeBlock(b, 0o644)
	if dst == "" {
		e.t.Fatalf("%s: snapshot-config block without path=", b.ID())
	}
	cfg, err := snapshot.LoadConfig(dst)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	return &blockRun{block: b, doc: cfg}
}

// iniSections parses a systemd unit: section -> key -> values.
func iniSections(text string) (map[string]map[string][]string, error) {
	out := map[string]map[string][]string{}
	sec := ""
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			if out[sec] == nil {
				out[sec] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				return nil, fmt.Errorf("line %d: %q is not Key=Value in a section", n+1, line)
			}
			out[sec][k] = append(out[sec][k], v)
		}
	}
	return out, nil
}

// runTimer writes a timer unit to its path= and has systemd check it with
// the service it starts (written by that block, same name unless Unit=):
// `systemd-analyze verify` must pass without a word (an unknown key, a
// calendar it cannot parse, a missing service all print one).
func (e *docEnv) runTimer(b doctest.Block) *blockRun {
	e.t.Helper()
	dst := e.writeBlock(b, 0o644)
	if dst == "" {
		e.t.Fatalf("%s: systemd-timer block without path=", b.ID())
	}
	secs, err := iniSections(b.Text)
	if err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	service := strings.TrimSuffix(filepath.Base(dst), ".timer") + ".service"
	if u := secs["Timer"]["Unit"]; len(u) > 0 {
		service = u[0]
	}
	svcPath := filepath.Join(filepath.Dir(dst), service)
	if _, err := os.Stat(svcPath); err != nil {
		e.t.Fatalf("%s: the timer starts %s, which no block wrote: %v", b.ID(), service, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", "--man=no", svcPath, dst).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		e.t.Fatalf("%s: systemd-analyze verify %s %s: %v\n%s", b.ID(), service, filepath.Base(dst), err, out)
	}
	return &blockRun{block: b, doc: secs}
}

// dockerInstr is one Dockerfile instruction.
type dockerInstr struct {
	Cmd  string // upper case: FROM, RUN, COPY, ...
	Args string // continuation lines joined
}

// runDockerfile parses a Dockerfile block; the spec checks it. There is
// no container runtime or registry on the test machine, so it is checked,
// not built: the CronJob that runs the image runs its ENTRYPOINT (kbackup)
// with the tools it installs (the shims).
func (e *docEnv) runDockerfile(b doctest.Block) *blockRun {
	e.t.Helper()
	var out []dockerInstr
	var cur strings.Builder
	for _, line := range strings.Split(b.Text, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		switch strings.ToUpper(cmd) {
		case "FROM", "RUN", "COPY", "ADD", "USER", "ENTRYPOINT", "CMD", "ENV", "ARG", "WORKDIR", "LABEL", "EXPOSE":
		default:
			e.t.Fatalf("%s: unknown instruction %q", b.ID(), cmd)
		}
		out = append(out, dockerInstr{Cmd: strings.ToUpper(cmd), Args: strings.Join(strings.Fields(args), " ")})
	}
	if cur.Len() > 0 || len(out) == 0 || out[0].Cmd != "FROM" {
		e.t.Fatalf("%s: not a Dockerfile (starts with FROM, no dangling continuation): %v", b.ID(), out)
	}
	return &blockRun{block: b, doc: out}
}

// runCronJob decodes a CronJob manifest strictly (k8s.io/api batch/v1:
// an unknown or misplaced field is an error) and runs its job's container
// as the kubelet would: the image's entrypoint (kbackup) with the
// container's args, the configuration mounted at its mountPath (the file
// the docs wrote there), and the environment of the other commands (the
// service account's credentials stand-in). Each absolute path in args
// must lie under a volumeMount of a volume the pod has.
func (e *docEnv) runCronJob(b doctest.Block, spec blockSpec) *blockRun {
	e.t.Helper()
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict([]byte(b.Text), &cj); err != nil {
		e.t.Fatalf("%s: %v", b.ID(), err)
	}
	if cj.APIVersion != "batch/v1" || cj.Kind != "CronJob" {
		e.t.Fatalf("%s: %s %s, want batch/v1 CronJob", b.ID(), cj.APIVersion, cj.Kind)
	}
	pod := cj.Spec.JobTemplate.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.Containers[0].Command) > 0 {
		e.t.Fatalf("%s: want one container running the image's entrypoint", b.ID())
	}
	c := pod.Containers[0]
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = true
	}
	for _, a := range c.Args {
		if !strings.HasPrefix(a, "/") {
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] && strings.HasPrefix(a, strings.TrimSuffix(m.MountPath, "/")+"/") {
				mounted = true
			}
		}
		if !mounted {
			e.t.Fatalf("%s: %s is under no volumeMount of the container", b.ID(), a)
		}
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = e.sub(a)
	}
	env := e.environ()
	for _, v := range c.Env {
		if v.ValueFrom != nil {
			e.t.Fatalf("%s: env %s from a reference: not supported by the runner", b.ID(), v.Name)
		}
		env = append(env, v.Name+"="+v.Value)
	}
	deadline := 10 * time.Minute
	if d := cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds; d != nil && time.Duration(*d)*time.Second < deadline {
		deadline = time.Duration(*d) * time.Second
	}
	p := testenv.StartProc(e.t, b.Name, filepath.Join(e.binDir, "kbackup"), env, args...)
	code := p.Wait(e.t, deadline)
	line := "kbackup " + strings.Join(args, " ")
	if want := spec.codes[0]; code != want {
		e.t.Fatalf("%s: %s: exit %d, want %d\n%s", b.ID(), line, code, want, p.Stderr())
	}
	return &blockRun{block: b, doc: &cj, cmds: []cmdResult{{cmd: line, stdout: p.Stdout(), stderr: p.Stderr(), code: code}}}
}

// TestTearAt: the cut falls in the middle of the batch holding the offset,
// later segments go, and an offset no batch holds is an error.
func TestTearAt(t *testing.T) {
	batch := func(base int64, n, size int) []byte {
		b := make([]byte, size)
		binary.BigEndian.PutUint64(b, uint64(base))
		binary.BigEndian.PutUint32(b[8:], uint32(size-12))
		binary.BigEndian.PutUint32(b[23:], uint32(n-1))
		return b
	}
	dir := t.TempDir()
	seg := filepath.Join(dir, "00000000000000000000.log")
	log := append(append(batch(0, 10, 100), batch(10, 5, 60)...), batch(15, 5, 80)...)
	later := filepath.Join(dir, "00000000000000000020.log")
	for p, b := range map[string][]byte{seg: log, later: batch(20, 1, 40)} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := tearAt(dir, 12); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(seg); err != nil || fi.Size() != 100+30 {
		t.Fatalf("segment: %v, %v (want 130 bytes: the second batch torn)", fi, err)
	}
	if _, err := os.Stat(later); !os.IsNotExist(err) {
		t.Fatalf("the later segment is still there: %v", err)
	}
	if err := tearAt(dir, 99); err == nil {
		t.Fatal("an offset no batch holds: no error")
	}
}

// truncateAll stops every broker and, in every broker's data directory,
// cuts each partition of topic in the middle of the record batch that holds
// offset at (later segments go), then removes what would let a broker trust
// its logs (the clean-shutdown marker, indexes, recovery and high-watermark
// checkpoints): as after a power loss that lost the page cache of every
// replica. It starts the cluster again; the brokers recover their logs and
// truncate them at the torn batch. (The technique of
// restore/replay_integration_test.go, on all replicas, cut at a batch: the
// replicas hold the same batches, so they agree where their logs end.)
func (e *docEnv) truncateAll(topic string, at int64) {
	e.t.Helper()
	c := e.k.Cluster()
	var wg sync.WaitGroup
	errs := make([]error, len(c.BrokerIDs()))
	for i, id := range c.BrokerIDs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.StopBroker(id, 60*time.Second)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	for _, id := range c.BrokerIDs() {
		data := c.DataDir(id)
		all, _ := filepath.Glob(filepath.Join(data, topic+"-*"))
		n := 0
		for _, d := range all {
			if !partDir.MatchString(strings.TrimPrefix(filepath.Base(d), topic+"-")) { // not orders-copy-0
				continue
			}
			n++
			if err := tearAt(d, at); err != nil {
				e.t.Fatalf("broker %d: %v", id, err)
			}
			for _, pat := range []string{"*.index", "*.timeindex", "*.snapshot"} {
				fs, _ := filepath.Glob(filepath.Join(d, pat))
				for _, f := range fs {
					_ = os.Remove(f)
				}
			}
		}
		if n == 0 {
			e.t.Fatalf("broker %d has no partition of %s", id, topic)
		}
		for _, f := range []string{".kafka_cleanshutdown", "recovery-point-offset-checkpoint", "replication-offset-checkpoint"} {
			if err := os.Remove(filepath.Join(data, f)); err != nil && !os.IsNotExist(err) {
				e.t.Fatal(err)
			}
		}
	}
	e.k.StartAll(e.t)
	e.k.WaitInSync(e.t, 3*time.Minute)
}

// tearAt cuts the partition directory's log in the middle of the record
// batch holding offset at and removes the segments after it. A batch
// (magic 2) starts with baseOffset int64, batchLength int32 (the bytes
// after this field), partitionLeaderEpoch int32, magic int8, crc int32,
// attributes int16, lastOffsetDelta int32.
func tearAt(dir string, at int64) error {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log")) // named by base offset, zero-padded: sorted
	for i, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			return err
		}
		for pos := 0; pos+27 <= len(b); {
			base := int64(binary.BigEndian.Uint64(b[pos:]))
			size := 12 + int(binary.BigEndian.Uint32(b[pos+8:]))
			last := base + int64(binary.BigEndian.Uint32(b[pos+23:]))
			if base <= at && at <= last {
				if err := os.Truncate(seg, int64(pos+size/2)); err != nil {
					return err
				}
				for _, later := range segs[i+1:] {
					if err := os.Remove(later); err != nil {
						return err
					}
				}
				return nil
			}
			pos += size
		}
	}
	return fmt.Errorf("%s: no record batch holds offset %d", dir, at)
}

var partDir = regexp.MustCompile(`^\d+$`)
