// The acceptance harness: HashiCorp's go-plugin launches the execdriver-nomad binary with
// Nomad's handshake, and a job's life runs through the plugin's gRPC API with stubs
// generated from our own .proto files. Exits non-zero on the first failure. Run it through
// run.sh, as root.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"execdriver.invalid/gen/base"
	"execdriver.invalid/gen/drivers"
	"execdriver.invalid/gen/structs"

	"github.com/golang/protobuf/ptypes"
	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Nomad's handshake for every plugin it launches.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

const allocID = "7d3a1c52-9b1e-4f0a-8c6d-2e5f4a3b1c0d"

type clients struct {
	base   base.BasePluginClient
	driver drivers.DriverClient
}

// nomadPlugin dispenses both of Nomad's interfaces over the one connection, as Nomad's
// "base" and "driver" plugins do.
type nomadPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (nomadPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("client only")
}

func (nomadPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &clients{base: base.NewBasePluginClient(c), driver: drivers.NewDriverClient(c)}, nil
}

type harness struct {
	pluginPath string
	work       string
	dataDir    string
	logs       *bytes.Buffer
	logger     hclog.Logger
	client     *plugin.Client
	c          *clients
	started    map[string]*drivers.TaskHandle
	step       string
}

func fail(format string, args ...interface{}) {
	panic(fmt.Errorf(format, args...))
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

// ctx bounds one call; its resources are released when the bound passes.
func ctx(d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return c
}

func (h *harness) say(step string) {
	h.step = step
	fmt.Printf("-- %s\n", step)
}

// launch starts the plugin the way Nomad's plugin loader does.
func (h *harness) launch() {
	cmd := exec.Command(h.pluginPath)
	// go-plugin adds the agent's own environment; the socket dir goes in our work dir, so a
	// plugin killed on purpose leaves nothing in /tmp.
	cmd.Env = []string{"PLUGIN_UNIX_SOCKET_DIR=" + h.work}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          map[string]plugin.Plugin{"base": nomadPlugin{}, "driver": nomadPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           h.logger,
	})
	rpc, err := client.Client()
	check(err, "starting the plugin through go-plugin")
	check(rpc.Ping(), "go-plugin health check")
	raw, err := rpc.Dispense("driver")
	check(err, "dispensing the driver")
	h.client = client
	h.c = raw.(*clients)
}

func (h *harness) configure() {
	schema, err := h.c.base.ConfigSchema(ctx(10*time.Second), &base.ConfigSchemaRequest{})
	check(err, "ConfigSchema")
	// A slice of its own: the node's execdriver.slice is never touched; run.sh removes it.
	config := fmt.Sprintf("data_dir = %q\nslice_name = %q\nmax_kill_timeout = \"20s\"\n",
		h.dataDir, os.Getenv("EXECDRIVER_ACCEPTANCE_SLICE"))
	encoded, value, err := encodeHCL(schema.GetSpec(), config)
	check(err, "encoding the plugin config against its schema")
	if got := value.GetAttr("default_user").AsString(); got != "nobody" {
		fail("the schema's default for default_user is %q, want nobody", got)
	}
	_, err = h.c.base.SetConfig(ctx(10*time.Second), &base.SetConfigRequest{
		MsgpackConfig:    encoded,
		PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{
			ClientMinPort: 20000, ClientMaxPort: 32000,
		}},
	})
	check(err, "SetConfig")
}

func expectCode(err error, code codes.Code, needle, what string) *status.Status {
	if err == nil {
		fail("%s: succeeded, want %s", what, code)
	}
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), needle) {
		fail("%s: got %s %q, want %s containing %q", what, st.Code(), st.Message(), code, needle)
	}
	return st
}

func (h *harness) taskConfig(name, suffix string, msgpack []byte) *drivers.TaskConfig {
	allocDir := filepath.Join(h.work, "alloc", allocID)
	for _, d := range []string{"alloc/logs", "alloc/tmp", "alloc/data", name + "/local", name + "/secrets", name + "/tmp"} {
		check(os.MkdirAll(filepath.Join(allocDir, d), 0o755), "alloc dir")
	}
	check(os.Chmod(filepath.Join(allocDir, "alloc"), 0o777), "chmod alloc")
	return &drivers.TaskConfig{
		Id:                  allocID + "/" + name + "/" + suffix,
		Name:                name,
		AllocId:             allocID,
		AllocDir:            allocDir,
		JobName:             "acceptance",
		TaskGroupName:       "group",
		MsgpackDriverConfig: msgpack,
		Env: map[string]string{
			"NOMAD_ALLOC_DIR":   "/alloc",
			"NOMAD_TASK_DIR":    "/local",
			"NOMAD_SECRETS_DIR": "/secrets",
			"GREETING":          "hello from nomad",
		},
		Resources: &drivers.Resources{AllocatedResources: &drivers.AllocatedTaskResources{
			Cpu:    &drivers.AllocatedCpuResources{CpuShares: 100},
			Memory: &drivers.AllocatedMemoryResources{MemoryMb: 64},
		}},
		StdoutPath: "/dev/null",
		StderrPath: "/dev/null",
	}
}

func (h *harness) shared(file string) string {
	return filepath.Join(h.work, "alloc", allocID, "alloc", file)
}

func waitFile(path string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := ioutil.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			fail("%s did not appear within %s", path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) start(task *drivers.TaskConfig) (*drivers.TaskHandle, time.Duration) {
	begun := time.Now()
	resp, err := h.c.driver.StartTask(ctx(60*time.Second), &drivers.StartTaskRequest{Task: task})
	latency := time.Since(begun)
	check(err, "StartTask "+task.Id)
	if resp.Result != drivers.StartTaskResponse_SUCCESS || resp.Handle == nil {
		fail("StartTask %s: result %s %q", task.Id, resp.Result, resp.DriverErrorMsg)
	}
	h.started[task.Id] = resp.Handle
	return resp.Handle, latency
}

func (h *harness) wait(taskID string) *drivers.WaitTaskResponse {
	resp, err := h.c.driver.WaitTask(ctx(30*time.Second), &drivers.WaitTaskRequest{TaskId: taskID})
	check(err, "WaitTask "+taskID)
	return resp
}

func (h *harness) destroy(taskID string) {
	_, err := h.c.driver.DestroyTask(ctx(30*time.Second), &drivers.DestroyTaskRequest{TaskId: taskID})
	check(err, "DestroyTask "+taskID)
	delete(h.started, taskID)
}

func (h *harness) stop(taskID, signal string, timeout time.Duration) time.Duration {
	begun := time.Now()
	_, err := h.c.driver.StopTask(ctx(timeout+30*time.Second), &drivers.StopTaskRequest{
		TaskId: taskID, Timeout: ptypes.DurationProto(timeout), Signal: signal,
	})
	check(err, "StopTask "+taskID)
	return time.Since(begun)
}

func (h *harness) protocolBasics() {
	h.say("PluginInfo")
	info, err := h.c.base.PluginInfo(ctx(10*time.Second), &base.PluginInfoRequest{})
	check(err, "PluginInfo")
	if info.Name != "execdriver" || info.Type != base.PluginType_DRIVER || len(info.PluginApiVersions) != 1 ||
		info.PluginApiVersions[0] != "v0.1.0" || info.PluginVersion == "" {
		fail("PluginInfo: %+v", info)
	}
	fmt.Printf("   name=%s type=%s api=%v version=%s\n", info.Name, info.Type, info.PluginApiVersions, info.PluginVersion)

	h.say("Fingerprint before SetConfig: refused as retryable")
	stream, err := h.c.driver.Fingerprint(ctx(10*time.Second), &drivers.FingerprintRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	st := expectCode(err, codes.FailedPrecondition, "not been configured", "Fingerprint before SetConfig")
	recoverable := false
	for _, d := range st.Details() {
		if r, ok := d.(*structs.RecoverableError); ok && r.Recoverable {
			recoverable = true
		}
	}
	if !recoverable {
		fail("the not-configured error carries no RecoverableError{recoverable: true}: %v", st.Details())
	}

	h.say("ConfigSchema + SetConfig (HCL decoded against the schema, go-cty msgpack)")
	h.configure()
	bogus := encodeValue(cty.ObjectVal(map[string]cty.Value{"bogus": cty.StringVal("x")}))
	_, err = h.c.base.SetConfig(ctx(10*time.Second), &base.SetConfigRequest{MsgpackConfig: bogus, PluginApiVersion: "v0.1.0"})
	expectCode(err, codes.InvalidArgument, "`bogus` is not a known key", "SetConfig with an unknown key")
	wrong := encodeValue(cty.ObjectVal(map[string]cty.Value{"chroot_env": cty.StringVal("/usr")}))
	_, err = h.c.base.SetConfig(ctx(10*time.Second), &base.SetConfigRequest{MsgpackConfig: wrong, PluginApiVersion: "v0.1.0"})
	expectCode(err, codes.InvalidArgument, "`chroot_env` must be a list of strings", "SetConfig with a wrong type")
	h.configure()

	h.say("Capabilities")
	caps, err := h.c.driver.Capabilities(ctx(10*time.Second), &drivers.CapabilitiesRequest{})
	check(err, "Capabilities")
	cp := caps.GetCapabilities()
	if !cp.SendSignals || !cp.Exec || cp.FsIsolation != drivers.DriverCapabilities_IMAGE ||
		cp.MountConfigs != drivers.DriverCapabilities_ANY_MOUNTS || len(cp.NetworkIsolationModes) != 2 ||
		cp.NetworkIsolationModes[0] != drivers.NetworkIsolationSpec_HOST ||
		cp.NetworkIsolationModes[1] != drivers.NetworkIsolationSpec_GROUP {
		fail("Capabilities: %+v", cp)
	}

	h.say("Fingerprint")
	fp, err := h.c.driver.Fingerprint(context.Background(), &drivers.FingerprintRequest{})
	check(err, "Fingerprint")
	type received struct {
		m   *drivers.FingerprintResponse
		err error
	}
	first := make(chan received, 1)
	go func() {
		m, err := fp.Recv()
		first <- received{m, err}
	}()
	select {
	case r := <-first:
		check(r.err, "Fingerprint stream")
		m := r.m
		if m.Health != drivers.FingerprintResponse_HEALTHY {
			fail("Fingerprint: %s %q", m.Health, m.HealthDescription)
		}
		if v, ok := m.Attributes["driver.execdriver"].GetValue().(*structs.Attribute_BoolVal); !ok || !v.BoolVal {
			fail("Fingerprint: driver.execdriver is %v", m.Attributes["driver.execdriver"])
		}
		fmt.Printf("   %s, %d attributes\n", m.HealthDescription, len(m.Attributes))
	case <-time.After(10 * time.Second):
		fail("no fingerprint within 10 s")
	}
}

func (h *harness) badTaskConfigs() {
	h.say("StartTask with bad task configs: refused by key, nothing started")
	nullArgs := cty.NullVal(cty.List(cty.String))
	cases := []struct {
		value  cty.Value
		needle string
	}{
		{cty.ObjectVal(map[string]cty.Value{"args": nullArgs, "command": cty.NullVal(cty.String)}), "`command` is required"},
		{cty.ObjectVal(map[string]cty.Value{"args": nullArgs, "command": cty.StringVal("/bin/true"), "comand": cty.StringVal("x")}), "`comand` is not a known key"},
		{cty.ObjectVal(map[string]cty.Value{"args": cty.StringVal("-c"), "command": cty.StringVal("/bin/sh")}), "`args` must be a list of strings, found a string"},
		{cty.ObjectVal(map[string]cty.Value{"args": nullArgs, "command": cty.NumberIntVal(5)}), "`command` must be a string, found a number"},
		{cty.ObjectVal(map[string]cty.Value{"args": nullArgs, "command": cty.UnknownVal(cty.String)}), "`command` is not known yet"},
	}
	for _, c := range cases {
		task := h.taskConfig("bad", "00000000", encodeValue(c.value))
		_, err := h.c.driver.StartTask(ctx(10*time.Second), &drivers.StartTaskRequest{Task: task})
		expectCode(err, codes.InvalidArgument, c.needle, "StartTask with "+c.needle)
	}
	entries, _ := ioutil.ReadDir(filepath.Join(h.dataDir, "tasks"))
	if len(entries) != 0 {
		fail("bad task configs left task state: %d entries", len(entries))
	}
}

func (h *harness) jobLife() {
	schema, err := h.c.driver.TaskConfigSchema(ctx(10*time.Second), &drivers.TaskConfigSchemaRequest{})
	check(err, "TaskConfigSchema")
	h.say("StartTask (task config HCL decoded against TaskConfigSchema)")
	encoded, _, err := encodeHCL(schema.GetSpec(), `
command = "/bin/sh"
args    = ["-c", "echo hi; echo \"$GREETING\" > /alloc/hi; trap 'echo usr1 > /alloc/usr1' USR1; while true; do sleep 0.1; done"]
`)
	check(err, "encoding the task config")
	task := h.taskConfig("web", "1a2b3c4d", encoded)
	stdout := newLogmon(h.shared("logs/.web.stdout.fifo"))
	stderr := newLogmon(h.shared("logs/.web.stderr.fifo"))
	task.StdoutPath, task.StderrPath = stdout.path, stderr.path
	handle, latency := h.start(task)
	fmt.Printf("   StartTask answered in %s\n", latency)
	if handle.Version < 1 || handle.State != drivers.TaskState_RUNNING || len(handle.DriverState) == 0 {
		fail("StartTask handle: %+v", handle)
	}
	if got := strings.TrimSpace(waitFile(h.shared("hi"), 10*time.Second)); got != "hello from nomad" {
		fail("the task saw GREETING=%q", got)
	}
	h.say("stdout through the stdout_path FIFO, as Nomad's logmon reads it")
	stdout.waitFor("hi\n", 10*time.Second)
	if _, err := os.Stat(h.shared("logs/web.stdout.0")); err == nil {
		fail("the driver wrote its own web.stdout.0 beside logmon's")
	}

	h.say("InspectTask")
	inspect, err := h.c.driver.InspectTask(ctx(10*time.Second), &drivers.InspectTaskRequest{TaskId: task.Id})
	check(err, "InspectTask")
	if inspect.Task.State != drivers.TaskState_RUNNING || inspect.Task.Name != "web" {
		fail("InspectTask: %+v", inspect.Task)
	}

	h.say("TaskStats")
	stats, err := h.c.driver.TaskStats(ctx(30*time.Second), &drivers.TaskStatsRequest{
		TaskId: task.Id, CollectionInterval: ptypes.DurationProto(200 * time.Millisecond),
	})
	check(err, "TaskStats")
	for i := 0; i < 3; i++ {
		m, err := stats.Recv()
		check(err, "TaskStats stream")
		usage := m.Stats.AggResourceUsage
		if usage.Memory == nil || len(usage.Memory.MeasuredFields) == 0 || usage.Cpu == nil ||
			len(usage.Cpu.MeasuredFields) == 0 || usage.Memory.Rss+usage.Memory.Cache == 0 {
			fail("TaskStats reading: %+v", usage)
		}
		fmt.Printf("   rss=%d cache=%d cpu=%.2f%% measured=%v\n", usage.Memory.Rss, usage.Memory.Cache,
			usage.Cpu.Percent, usage.Memory.MeasuredFields)
	}

	h.say("SignalTask SIGUSR1")
	_, err = h.c.driver.SignalTask(ctx(10*time.Second), &drivers.SignalTaskRequest{TaskId: task.Id, Signal: "SIGUSR1"})
	check(err, "SignalTask")
	waitFile(h.shared("usr1"), 10*time.Second)

	h.say("ExecTask: output and exit code of a command in the task")
	execd, err := h.c.driver.ExecTask(ctx(30*time.Second), &drivers.ExecTaskRequest{
		TaskId:  task.Id,
		Command: []string{"/bin/sh", "-c", "cat /alloc/hi; id -u; echo e >&2; exit 3"},
		Timeout: ptypes.DurationProto(20 * time.Second),
	})
	check(err, "ExecTask")
	if string(execd.Stdout) != "hello from nomad\n65534\n" || string(execd.Stderr) != "e\n" || execd.Result.ExitCode != 3 {
		fail("ExecTask: %+v", execd)
	}

	h.say("ExecTaskStreaming with a TTY and a resize")
	stream, err := h.c.driver.ExecTaskStreaming(ctx(30 * time.Second))
	check(err, "ExecTaskStreaming")
	check(stream.Send(&drivers.ExecTaskStreamingRequest{Setup: &drivers.ExecTaskStreamingRequest_Setup{
		TaskId: task.Id, Command: []string{"/bin/sh", "-c", "read x; stty size; tty; exit 5"}, Tty: true,
	}}), "ExecTaskStreaming setup")
	check(stream.Send(&drivers.ExecTaskStreamingRequest{TtySize: &drivers.ExecTaskStreamingRequest_TerminalSize{Height: 24, Width: 100}}), "resize")
	check(stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte("go\n")}}), "stdin")
	var shown strings.Builder
	for {
		m, err := stream.Recv()
		check(err, "ExecTaskStreaming receive")
		if m.Stdout != nil {
			shown.Write(m.Stdout.Data)
		}
		if m.Exited {
			if m.Result.ExitCode != 5 {
				fail("ExecTaskStreaming exit: %+v", m.Result)
			}
			break
		}
	}
	check(stream.CloseSend(), "ExecTaskStreaming close")
	if !strings.Contains(shown.String(), "24 100") || !strings.Contains(shown.String(), "/dev/pts/") {
		fail("ExecTaskStreaming output: %q", shown.String())
	}

	h.say("DestroyTask of a running task without force: refused")
	_, err = h.c.driver.DestroyTask(ctx(10*time.Second), &drivers.DestroyTaskRequest{TaskId: task.Id})
	expectCode(err, codes.FailedPrecondition, "still running", "DestroyTask of a running task")

	h.say("StopTask SIGTERM, WaitTask, DestroyTask")
	took := h.stop(task.Id, "SIGTERM", 10*time.Second)
	if took > 5*time.Second {
		fail("StopTask took %s for a task that dies on SIGTERM", took)
	}
	waited := h.wait(task.Id)
	if waited.Result.Signal != 15 || waited.Err != "" {
		fail("WaitTask: %+v", waited)
	}
	again := h.wait(task.Id)
	if again.Result.Signal != 15 {
		fail("the second WaitTask: %+v", again)
	}
	fmt.Printf("   stop took %s; exit_code=%d signal=%d\n", took, waited.Result.ExitCode, waited.Result.Signal)
	// The FIFOs were held for the task's life, and only for it.
	stdout.waitEOF(10 * time.Second)
	stderr.waitEOF(10 * time.Second)
	h.destroy(task.Id)
	_, err = h.c.driver.WaitTask(ctx(10*time.Second), &drivers.WaitTaskRequest{TaskId: task.Id})
	expectCode(err, codes.NotFound, "not known", "WaitTask after DestroyTask")

	h.say("an exit code reaches WaitTask")
	quick, _, err := encodeHCL(schema.GetSpec(), "command = \"/bin/sh\"\nargs = [\"-c\", \"exit 7\"]\n")
	check(err, "encoding")
	qt := h.taskConfig("quick", "0000aaaa", quick)
	h.start(qt)
	if r := h.wait(qt.Id); r.Result.ExitCode != 7 || r.Result.Signal != 0 {
		fail("WaitTask of exit 7: %+v", r)
	}
	h.destroy(qt.Id)

	h.say("a dns block becomes the task's /etc/resolv.conf")
	resolv, _, err := encodeHCL(schema.GetSpec(), "command = \"/bin/sh\"\nargs = [\"-c\", \"cat /etc/resolv.conf > /alloc/resolv\"]\n")
	check(err, "encoding")
	dt := h.taskConfig("dns", "0000bbbb", resolv)
	dt.Dns = &drivers.DNSConfig{Servers: []string{"10.0.0.2"}, Searches: []string{"service.consul"}, Options: []string{"ndots:2"}}
	h.start(dt)
	if r := h.wait(dt.Id); r.Result.ExitCode != 0 {
		fail("WaitTask of the dns task: %+v", r)
	}
	got := waitFile(h.shared("resolv"), 10*time.Second)
	for _, want := range []string{"nameserver 10.0.0.2\n", "search service.consul\n", "options ndots:2\n"} {
		if !strings.Contains(got, want) {
			fail("the task's resolv.conf lacks %q: %q", want, got)
		}
	}
	h.destroy(dt.Id)
}

func (h *harness) recovery() {
	schema, err := h.c.driver.TaskConfigSchema(ctx(10*time.Second), &drivers.TaskConfigSchemaRequest{})
	check(err, "TaskConfigSchema")
	h.say("StartTask, then SIGKILL the plugin process")
	encoded, _, err := encodeHCL(schema.GetSpec(), `
command = "/bin/sh"
args    = ["-c", "while true; do date +%s%N > /alloc/beat; echo beat; sleep 0.05; done"]
`)
	check(err, "encoding")
	task := h.taskConfig("db", "9f8e7d6c", encoded)
	stdout := newLogmon(h.shared("logs/.db.stdout.fifo"))
	task.StdoutPath = stdout.path
	handle, _ := h.start(task)
	stdout.waitFor("beat\n", 10*time.Second)
	waitFile(h.shared("beat"), 10*time.Second)
	pid := h.client.ReattachConfig().Pid
	check(syscall.Kill(pid, syscall.SIGKILL), "killing the plugin")
	deadline := time.Now().Add(10 * time.Second)
	for !h.client.Exited() {
		if time.Now().After(deadline) {
			fail("go-plugin did not see the plugin exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.client.Kill()
	before := waitFile(h.shared("beat"), time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for waitFile(h.shared("beat"), time.Second) == before {
		if time.Now().After(deadline) {
			fail("the task stopped running when the plugin died")
		}
		time.Sleep(10 * time.Millisecond)
	}

	h.say("logmon restarts too: the FIFO, held by the task's supervisor, flows again")
	stdout.restart()
	stdout.waitFor("beat\n", 10*time.Second)

	h.say("a new plugin: SetConfig, RecoverTask (twice), InspectTask")
	h.launch()
	h.configure()
	for i := 0; i < 2; i++ {
		_, err = h.c.driver.RecoverTask(ctx(30*time.Second), &drivers.RecoverTaskRequest{TaskId: task.Id, Handle: handle})
		check(err, "RecoverTask")
	}
	inspect, err := h.c.driver.InspectTask(ctx(10*time.Second), &drivers.InspectTaskRequest{TaskId: task.Id})
	check(err, "InspectTask after recovery")
	if inspect.Task.State != drivers.TaskState_RUNNING {
		fail("InspectTask after recovery: %+v", inspect.Task)
	}

	h.say("StopTask (default signal), WaitTask, DestroyTask of the recovered task")
	h.stop(task.Id, "", 10*time.Second)
	waited := h.wait(task.Id)
	if waited.Result.Signal != 2 {
		fail("WaitTask of the recovered task: %+v", waited)
	}
	fmt.Printf("   exit_code=%d signal=%d\n", waited.Result.ExitCode, waited.Result.Signal)
	h.destroy(task.Id)
}

func (h *harness) checkLogs() {
	h.say("plugin log lines reached go-plugin as hclog JSON")
	text := h.logs.String()
	for _, want := range []string{"task started", "task recovered", "task destroyed"} {
		found := false
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "[INFO]") && strings.Contains(line, want) && !strings.Contains(line, "@message") {
				found = true
			}
		}
		if !found {
			fail("no INFO line %q re-logged by go-plugin", want)
		}
	}
}

// cleanup destroys, with force, every task a failed run left, through a fresh plugin.
func (h *harness) cleanup() {
	if len(h.started) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "cleanup: destroying %d tasks\n", len(h.started))
	if h.client != nil {
		h.client.Kill()
	}
	func() {
		defer func() { recover() }()
		h.launch()
		h.configure()
	}()
	if h.c == nil {
		return
	}
	for id, handle := range h.started {
		h.c.driver.RecoverTask(ctx(30*time.Second), &drivers.RecoverTaskRequest{TaskId: id, Handle: handle})
		if _, err := h.c.driver.DestroyTask(ctx(60*time.Second), &drivers.DestroyTaskRequest{TaskId: id, Force: true}); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %s: %v\n", id, err)
		}
	}
	h.client.Kill()
}

func main() {
	pluginPath := flag.String("plugin", "", "the execdriver-nomad binary")
	work := flag.String("work", "", "a private temp dir for data and alloc dirs")
	flag.Parse()
	if *pluginPath == "" || *work == "" {
		fmt.Fprintln(os.Stderr, "usage: acceptance -plugin PATH -work DIR")
		os.Exit(2)
	}
	logs := &bytes.Buffer{}
	h := &harness{
		pluginPath: *pluginPath,
		work:       *work,
		dataDir:    filepath.Join(*work, "data"),
		logs:       logs,
		logger: hclog.New(&hclog.LoggerOptions{
			Name: "acceptance", Level: hclog.Debug, Output: io.MultiWriter(logs, os.Stderr),
		}),
		started: map[string]*drivers.TaskHandle{},
	}
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				fmt.Printf("FAIL at %q: %v\n", h.step, r)
				code = 1
				h.cleanup()
			}
		}()
		h.launch()
		h.protocolBasics()
		h.badTaskConfigs()
		h.jobLife()
		h.recovery()
		h.say("go-plugin Kill: Shutdown over the controller, prompt exit")
		begun := time.Now()
		h.client.Kill()
		if took := time.Since(begun); took > 2*time.Second {
			fail("the plugin took %s to exit after Shutdown (go-plugin SIGKILLs at 2 s)", took)
		} else {
			fmt.Printf("   exited in %s\n", took)
		}
		h.checkLogs()
	}()
	if code == 0 {
		fmt.Println("PASS: acceptance with go-plugin, go-cty and our stubs")
	}
	os.Exit(code)
}
