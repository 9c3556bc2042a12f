package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testdata/update-console.log is the console of a real, passing
// TestLabKernelUpdate run (6.1 -> 6.12, two VMs carried, the volatile VM
// refused): the lab host's lines, its kernel's, and the relayed pmvm and
// guest lines, as VM.WaitFor sees them.
const updateFixture = "testdata/update-console.log"

func recordedUpdate(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(updateFixture)
	require.NoError(t, err)
	return string(b)
}

// replayUpdate runs CheckUpdateRun on console text played by a fake QEMU.
func replayUpdate(t *testing.T, console string) (*UpdateRun, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "console.log")
	require.NoError(t, os.WriteFile(p, []byte(console), 0o644))
	vm, err := testLab(t).Start(fakeQEMU(t, "cat "+p))
	require.NoError(t, err)
	t.Cleanup(vm.Kill)
	return CheckUpdateRun(vm, UpdateExpect{From: "6.1.0-57-amd64", To: "6.12.118+deb12-amd64", VCPUs: 1}, time.Minute)
}

func TestParseUpdateLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want UpdateEvent
	}{
		{"PMVM-LAB init 6.12.118+deb12-amd64 phase=restore", EvInit{Uname: "6.12.118+deb12-amd64", Phase: "restore"}},
		{"PMVM-LAB l1 phase=boot uname=6.1.0-57-amd64 date=1796696217.186233 uptime=3.08",
			EvL1Facts{Phase: "boot", Uname: "6.1.0-57-amd64", Date: 1796696217.186233}},
		{"PMVM-LAB dax name=dax0.0 size=262144000 uuid=d78e1e66-0d31-4607-be52-cb74b9b68b49",
			EvDax{Name: "dax0.0", Size: 262144000, UUID: "d78e1e66-0d31-4607-be52-cb74b9b68b49"}},
		{"PMVM-LAB state-fs dev=/dev/pmem2 type=ext2 size-kb=63461", EvStateFS{Dev: "/dev/pmem2", Type: "ext2"}},
		{"PMVM-LAB cgroup2 controllers=cpuset,cpu,io,memory", EvCgroup2{Controllers: "cpuset,cpu,io,memory"}},
		{"PMVM-LAB vm-ready vm=vm2 l1-date=1796696241 boot_id=162eb715 ready date=1796696240 uptime=8.27",
			EvVM{Tag: "vm-ready", VM: "vm2", L1Date: 1796696241, Guest: "boot_id=162eb715 ready date=1796696240 uptime=8.27",
				Fields: map[string]string{"boot_id": "162eb715", "date": "1796696240", "uptime": "8.27"}}},
		{"PMVM-LAB resumed vm=vm1 FAILED: no /PMVM-GUEST resumed n=1 / within 300 s",
			EvVM{Tag: "resumed", VM: "vm1", Failed: true, Guest: "no /PMVM-GUEST resumed n=1 / within 300 s"}},
		{"PMVM-LAB cgroup-before vm=vm1 pid=198 cgroup=/pmvm.slice/vm1.scope", EvCgroupBefore{VM: "vm1", Cgroup: "/pmvm.slice/vm1.scope"}},
		{"PMVM-LAB refuse-status-vm1: runstate:  running (since 02:16:58.401, 31.031s)",
			EvOutput{Tag: "refuse-status-vm1", Text: "runstate:  running (since 02:16:58.401, 31.031s)"}},
		{"PMVM-LAB restore: ", EvOutput{Tag: "restore", Text: ""}},
		{"PMVM-LAB refuse-exit=1 secs=0", EvExit{Tag: "refuse", Code: 1}},
		{"PMVM-LAB after-status-vm2-exit=0 secs=0", EvExit{Tag: "after-status-vm2", Code: 0}},
		{"PMVM-LAB after-refusal state-files=0 kexec-loaded=0", EvAfterRefusal{StateFiles: 0, KexecLoaded: "0"}},
		{"PMVM-LAB stopped vm=volatile exit=4", EvStopped{VM: "volatile", Exit: 4}},
		{"PMVM-LAB update-start l1-date=1796696250.763663", EvUpdateStart{}},
		{"PMVM-LAB update-output-end lines=49", EvUpdateOutputEnd{}},
		{"PMVM-LAB proc pid=235 config=/etc/pmvm/vms/vm1.toml cgroup=/pmvm.slice/vm1.scope",
			EvProc{PID: 235, Config: "/etc/pmvm/vms/vm1.toml", Cgroup: "/pmvm.slice/vm1.scope"}},
		{"PMVM-LAB state-dir a.json vm1.state.resumed-x ", EvStateDir{Names: []string{"a.json", "vm1.state.resumed-x"}}},
		{"PMVM-LAB state-files-at-boot vm1.state vm2.state ", EvOther{Text: "state-files-at-boot vm1.state vm2.state "}},
		{"PMVM-LAB scenario-exit=0", EvScenarioExit{Code: 0}},
		{"PMVM-LAB ERROR: pmvm host restore exited 1", EvError{Msg: "pmvm host restore exited 1"}},
		{"PMVM-LAB got: PMVM-GUEST ready date=1796696229 uptime=7.93", EvOther{Text: "got: PMVM-GUEST ready date=1796696229 uptime=7.93"}},
		{"PMVM-LAB WARNING: running 6.1.0-57-amd64, the update was to 6.12", EvOther{Text: "WARNING: running 6.1.0-57-amd64, the update was to 6.12"}},
	} {
		got, ok := ParseUpdateLine(c.line)
		require.True(t, ok, c.line)
		require.Equal(t, c.want, got, c.line)
	}
	for _, line := range []string{"[vm1] PMVM-GUEST resumed n=1 date=1", "[   50.388488] Kernel panic", "Booting from ROM..PMVM-LAB init 6.1.0-57-amd64"} {
		_, ok := ParseUpdateLine(line)
		require.False(t, ok, line)
	}
}

// Every lab line of the recorded run parses, and the parser's view of it
// holds what the story needs.
func TestParseRecordedUpdateConsole(t *testing.T) {
	kinds := map[string]int{}
	for _, l := range strings.Split(recordedUpdate(t), "\n") {
		ev, ok := ParseUpdateLine(l)
		if !ok {
			continue
		}
		kinds[strings.TrimPrefix(fmt.Sprintf("%T", ev), "lab.")]++
	}
	require.Equal(t, 2, kinds["EvL1Facts"])
	require.Equal(t, 4, kinds["EvDax"])
	require.Equal(t, 2, kinds["EvStateFS"])
	require.Equal(t, 1, kinds["EvInit"], "the first init line shares its console line with SeaBIOS")
	require.Equal(t, 7, kinds["EvVM"], "vm-ready x3, resumed x2, verified x2")
	require.Equal(t, 2, kinds["EvProc"])
	require.Equal(t, 1, kinds["EvScenarioExit"])
	require.Zero(t, kinds["EvError"])
}

func TestCheckUpdateRunOnRecordedConsole(t *testing.T) {
	r, err := replayUpdate(t, recordedUpdate(t))
	require.NoError(t, err)
	require.Empty(t, r.Problems)
	require.Empty(t, r.RefusalProblems)
	require.Equal(t, "6.1.0-57-amd64", r.UnameBefore)
	require.Equal(t, "6.12.118+deb12-amd64", r.UnameAfter)
	require.Equal(t, "ext2", r.StateFS)
	require.Equal(t, 1, r.RefuseExit)
	require.Contains(t, strings.Join(r.RefuseOutput, "\n"), "refused before anything was suspended")
	require.Equal(t, 4, r.VolatileExit)
	require.Equal(t, 0, r.RestoreExit)
	for _, d := range r.Dax {
		require.True(t, d.SeenBefore && d.SeenAfter, d.Name)
		require.Equal(t, d.UUIDBefore, d.UUIDAfter, d.Name)
	}
	vm1 := r.VM("vm1")
	require.Equal(t, "67f4a09d-33be-4e7f-a7df-8c3e90668b88", vm1.BootID)
	require.Equal(t, vm1.BootID, vm1.BootIDAfter)
	require.Equal(t, int64(1796696229), vm1.ReadyDate)
	require.Equal(t, int64(1796696261), vm1.GuestDate)
	require.Equal(t, 9959*time.Millisecond, vm1.Blackout)
	require.Equal(t, "ok", vm1.Verify)
	require.Equal(t, 235, vm1.PID)
	require.Equal(t, "/pmvm.slice/vm1.scope", vm1.Cgroup)
	require.Equal(t, vm1.CgroupBefore, vm1.Cgroup)
	require.Equal(t, "9.954s", r.VM("vm2").BlackoutText)
	require.Len(t, r.StateDirAfter, 3)
	require.Len(t, r.Hooks, 3)
	require.NotEmpty(t, r.UpdateTimeline())
	require.Equal(t, "host update timeline 20261208T021730.868Z (6.1.0-57-amd64 -> 6.12.118+deb12-amd64)", r.UpdateTimeline()[0])
	require.NotEmpty(t, r.PreKexecTimeline())
	require.Len(t, r.Steps, 9)
	require.NotEmpty(t, r.Summary())
}

// Each wrong value in an otherwise good run is one Problem naming it.
func TestCheckUpdateRunJudgesWrongValues(t *testing.T) {
	good := recordedUpdate(t)
	for _, c := range []struct {
		name, from, to string
		refusal        bool // a problem of the refusal part
		want           string
	}{
		{"rebooted", "resumed vm=vm1 l1-date=1796696261 resumed n=1 cpus-online=0 boot_id=67f4a09d-33be-4e7f-a7df-8c3e90668b88",
			"resumed vm=vm1 l1-date=1796696261 resumed n=1 cpus-online=0 boot_id=00000000-33be-4e7f-a7df-8c3e90668b88",
			false, "VM vm1: boot_id \"00000000-33be-4e7f-a7df-8c3e90668b88\" after the update"},
		// The guest's date, not the lab host's l1-date, is compared.
		{"clock", "PMVM-LAB resumed vm=vm1 l1-date=1796696261 resumed n=1 cpus-online=0 boot_id=67f4a09d-33be-4e7f-a7df-8c3e90668b88 pm-exit=1 suspend-fail=0 uptime=40.30 date=1796696261",
			"PMVM-LAB resumed vm=vm1 l1-date=1796696261 resumed n=1 cpus-online=0 boot_id=67f4a09d-33be-4e7f-a7df-8c3e90668b88 pm-exit=1 suspend-fail=0 uptime=40.30 date=1796696271",
			false, "VM vm1: guest wall clock 1796696271 vs lab host 1796696261 after the resume: off by 10 s"},
		{"pattern", "verified vm=vm2 l1-date=1796696262 pattern-verify ok", "verified vm=vm2 l1-date=1796696262 pattern-verify BAD",
			false, "VM vm2: guest memory pattern check after the update"},
		{"own cgroup", "proc pid=234 config=/etc/pmvm/vms/vm2.toml cgroup=/pmvm.slice/vm2.scope", "proc pid=234 config=/etc/pmvm/vms/vm2.toml cgroup=/",
			false, "VM vm2: its restored pmvm runs in cgroup \"/\", want a cgroup of its own"}, // and not the same as before: 2
		{"same cgroup", "cgroup-before vm=vm2 pid=888 cgroup=/pmvm.slice/vm2.scope", "cgroup-before vm=vm2 pid=888 cgroup=/pmvm.slice/vm2-old.scope",
			false, "VM vm2: its pmvm ran in cgroup \"/pmvm.slice/vm2-old.scope\" before the update"},
		{"uuid", "uuid=21971ae2-7c56-4b62-95b1-4cbfeb64c0de\n[    4.491623]", "uuid=11111111-7c56-4b62-95b1-4cbfeb64c0de\n[    4.491623]",
			false, "/dev/dax1.0: namespace uuid \"21971ae2-7c56-4b62-95b1-4cbfeb64c0de\" before the kexec, \"11111111"},
		{"state left", "state-dir update-timeline", "state-dir vm1.state update-timeline",
			false, "state file vm1.state is still in state_dir"},
		{"hook", "PMVM-LAB hooks: post-restore vm=vm2 ", "PMVM-LAB hooks: post-restore vm=vmX ",
			false, "the post-restore hook left no trace for VM vm2"},
		{"not refused", "PMVM-LAB refuse-exit=1 ", "PMVM-LAB refuse-exit=0 ",
			true, "pmvm host update with VM volatile running exited 0, want 1"},
		{"state after refusal", "after-refusal state-files=0", "after-refusal state-files=2",
			true, "the refused update left 2 state files"},
		{"no blackout", "PMVM-LAB restore:   vm1  9.959s", "PMVM-LAB restore:   vmX  9.959s",
			false, "pmvm host restore's timeline shows no blackout for VM vm1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, 1, strings.Count(good, c.from), "the fixture must hold %q once", c.from)
			r, err := replayUpdate(t, strings.Replace(good, c.from, c.to, 1))
			require.NoError(t, err)
			problems, others := r.Problems, r.RefusalProblems
			if c.refusal {
				problems, others = others, problems
			}
			require.Empty(t, others)
			n := 1
			if c.name == "own cgroup" {
				n = 2
			}
			require.Len(t, problems, n, "%q", problems)
			require.Contains(t, problems[0], c.want)
		})
	}
}

// A missing line is an error that says which line; so is a scenario that
// gave up.
func TestCheckUpdateRunMissingLines(t *testing.T) {
	good := recordedUpdate(t)
	cut := func(from string) string { return good[:strings.Index(good, from)] }

	r, err := replayUpdate(t, cut("PMVM-LAB init 6.12.118"))
	require.ErrorContains(t, err, "the lab host did not come up on the new kernel")
	require.Equal(t, 1, r.RefuseExit, "what was read before is kept")

	_, err = replayUpdate(t, cut("PMVM-LAB scenario-exit="))
	require.ErrorContains(t, err, "PMVM-LAB scenario-exit=")

	_, err = replayUpdate(t, cut("PMVM-LAB verified vm=vm2")+"PMVM-LAB verified vm=vm2 FAILED: no /pattern-verify/ within 600 s\n")
	require.ErrorContains(t, err, "PMVM-LAB verified vm=vm2 FAILED: no /pattern-verify/")
}

func TestJudges(t *testing.T) {
	require.Empty(t, judgeStateFS("ext2"))
	require.NotEmpty(t, judgeStateFS("tmpfs"))
	require.Empty(t, judgeUname("x", "6.1", ""))
	require.Equal(t, []string{"the lab host booted 6.1, want 6.12"}, judgeUname("the lab host booted", "6.1", "6.12"))
	require.Empty(t, judgeRunning("vm1", []string{"runstate:  running (since 1)"}))
	require.Equal(t, []string{`vm1: pmvm status says "suspended (since 1)", want running`}, judgeRunning("vm1", []string{"runstate:  suspended (since 1)"}))
	require.Len(t, judgeAfterRefusal(EvAfterRefusal{StateFiles: 1, KexecLoaded: "1"}), 2)
	require.Equal(t, []string{"/dev/dax0.0: seen before the kexec true, after it false"},
		judgeDax(&UpdateDax{Name: "dax0.0", SeenBefore: true, UUIDBefore: "u"}))
	require.Len(t, judgeDax(&UpdateDax{Name: "d", SeenBefore: true, SeenAfter: true, UUIDBefore: "u", UUIDAfter: "v", SizeBefore: 1, SizeAfter: 2}), 2)
	require.Len(t, judgeRefusal(1, []string{`VM "volatile" cannot be preserved`, "refused before anything was suspended"}), 0)
	require.Len(t, judgeRefusal(0, nil), 3)
	require.Equal(t, map[string]string{"vm1": "1.5s", "vm2": "2s"},
		parseBlackouts([]string{"x", "blackout (save requested -> running again):", "  vm1  1.5s", "  vm2  2s", "timeline: f", "  vm3  9s"}))
	v := &UpdateVM{Name: "vm1", BootID: "a", BootIDAfter: "a", Resumed: map[string]string{"cpus-online": "0-1", "pm-exit": "1"}, GuestDate: 10, L1Date: 13, Skew: -3}
	require.Len(t, judgeResumed(v, UpdateExpect{VCPUs: 2, MaxSkew: 2}), 1)
	require.Empty(t, judgeResumed(v, UpdateExpect{VCPUs: 2, MaxSkew: 3}))
	require.Len(t, judgeResumed(v, UpdateExpect{VCPUs: 1, MaxSkew: 3}), 1)
	require.Empty(t, judgeHooks([]string{"pre-kexec vms=vm1,vm2 kernel=k", "post-restore vm=vm1 state=s", "post-restore vm=vm2 state=s"}, []string{"vm1", "vm2"}))
	require.Len(t, judgeHooks(nil, []string{"vm1", "vm2"}), 3)
	require.Len(t, judgeUpdateOutput([]string{"host update timeline x", "  vm1  saved in 3ms -> /s", "kexec into " + LabNextKernel}, []string{"vm1", "vm2"}), 1)
}
