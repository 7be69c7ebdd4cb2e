// csi-testdriver: a small CSI driver and plugin-registration sidecar for bosun's CSI tests.
//
// It stands in for csi-driver-host-path (hostpathplugin) and node-driver-registrar, which the Go
// module proxy this project uses does not serve. It is built only from the upstream protocol
// modules (the CSI spec's generated Go code, k8s.io/kubelet's pluginregistration API, gRPC), so
// bosun's Rust clients are checked against an independent implementation of the wire format.
//
//	csi-testdriver driver    --endpoint unix:///x.sock --nodeid N --drivername D --statedir DIR
//	csi-testdriver registrar --csi-address /x.sock --kubelet-registration-path /x.sock \
//	                         --plugin-registration-path /var/lib/kubelet/plugins_registry
//	csi-testdriver create-volume --endpoint unix:///x.sock --name pvc-1 [--size BYTES]
//
// The driver behaves like hostpathplugin: CreateVolume makes a folder under --statedir; it
// stages by bind-mounting that folder on the staging path and publishes by bind-mounting the
// staging path on the target (read-only when asked); a CSI ephemeral inline volume (volume
// context csi.storage.k8s.io/ephemeral=true, from podInfoOnMount) is a fresh folder under
// <statedir>/ephemeral/, bind-mounted on the target and removed at unpublish. Volume sizes are
// recorded (<statedir>/capacity/<id>) by CreateVolume and NodeExpandVolume and reported by
// NodeGetVolumeStats. A block volume (volumeMode Block) is a loop device over
// <statedir>/block/<id>.img, attached at NodeStageVolume, bind-mounted on the target file at
// NodePublishVolume and detached at NodeUnstageVolume. Every node call is appended as one JSON
// line to <statedir>/requests.jsonl so tests can check what the CO sent. The registrar behaves
// like node-driver-registrar: it asks the driver its name, serves GetInfo on
// <plugin-registration-path>/<driver>-reg.sock, exits 1 when told registration failed, and
// removes its socket on SIGTERM. create-volume plays the external-provisioner's part: it calls
// the Controller service's CreateVolume on the endpoint and prints the volume id (one line),
// then the volume context as JSON (second line).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const version = "0.1.0"

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if len(os.Args) < 2 {
		log.Fatalf("usage: %s driver|registrar [flags]", os.Args[0])
	}
	switch os.Args[1] {
	case "driver":
		runDriver(os.Args[2:])
	case "registrar":
		runRegistrar(os.Args[2:])
	case "create-volume":
		runCreateVolume(os.Args[2:])
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func listenUnix(path string) net.Listener {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("remove stale socket %s: %v", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		log.Fatalf("mkdir: %v", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		log.Fatalf("listen %s: %v", path, err)
	}
	return l
}

func onSignal(f func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-ch
		log.Printf("got %v, exiting", s)
		f()
		os.Exit(0)
	}()
}

// ---- driver ----

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer
	name, nodeID, stateDir string
	maxVolumes             int64
	mu                     sync.Mutex
}

func runDriver(args []string) {
	fs := flag.NewFlagSet("driver", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "unix:///path/to/csi.sock")
	nodeID := fs.String("nodeid", "", "node id")
	name := fs.String("drivername", "hostpath.csi.k8s.io", "driver name")
	stateDir := fs.String("statedir", "", "where volumes live")
	maxVolumes := fs.Int64("maxvolumespernode", 0, "max volumes per node (0: unlimited)")
	_ = fs.Parse(args)
	if *nodeID == "" || *stateDir == "" || !strings.HasPrefix(*endpoint, "unix://") {
		log.Fatal("--endpoint unix://..., --nodeid and --statedir are required")
	}
	if err := os.MkdirAll(*stateDir, 0o750); err != nil {
		log.Fatal(err)
	}
	d := &driver{name: *name, nodeID: *nodeID, stateDir: *stateDir, maxVolumes: *maxVolumes}
	sock := strings.TrimPrefix(*endpoint, "unix://")
	l := listenUnix(sock)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err != nil {
			log.Printf("%s: %v", info.FullMethod, err)
		}
		return resp, err
	}))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	onSignal(func() { srv.Stop(); _ = os.Remove(sock) })
	log.Printf("driver %s (node %s) serving on %s", d.name, d.nodeID, sock)
	if err := srv.Serve(l); err != nil {
		log.Fatal(err)
	}
}

func (d *driver) record(method string, v map[string]any) {
	v["method"] = method
	b, _ := json.Marshal(v)
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(d.stateDir, "requests.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		log.Printf("record: %v", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

func (d *driver) volDir(id string) string { return filepath.Join(d.stateDir, "volumes", id) }

func (d *driver) ephemeralDir(id string) string { return filepath.Join(d.stateDir, "ephemeral", id) }

// capacityFile records a volume's size (CreateVolume, NodeExpandVolume) for NodeGetVolumeStats.
func (d *driver) capacityFile(id string) string {
	return filepath.Join(d.stateDir, "capacity", id)
}

func (d *driver) setCapacity(id string, bytes int64) error {
	if err := os.MkdirAll(filepath.Dir(d.capacityFile(id)), 0o750); err != nil {
		return err
	}
	return os.WriteFile(d.capacityFile(id), []byte(fmt.Sprint(bytes)), 0o640)
}

// capacity: the recorded size of a volume, 0 when unknown.
func (d *driver) capacity(id string) int64 {
	b, err := os.ReadFile(d.capacityFile(id))
	if err != nil {
		return 0
	}
	var n int64
	_, _ = fmt.Sscan(string(b), &n)
	return n
}

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.name, VendorVersion: version}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
	}}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing in request")
	}
	sum := sha256.Sum256([]byte(req.GetName()))
	id := "vol-" + hex.EncodeToString(sum[:8])
	if err := os.MkdirAll(d.volDir(id), 0o777); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.setCapacity(id, req.GetCapacityRange().GetRequiredBytes()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           id,
		CapacityBytes:      req.GetCapacityRange().GetRequiredBytes(),
		VolumeContext:      map[string]string{"storage.kubernetes.io/csiProvisionerIdentity": "csi-testdriver"},
		AccessibleTopology: []*csi.Topology{{Segments: map[string]string{"topology.hostpath.csi/node": d.nodeID}}},
	}}, nil
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing in request")
	}
	if err := os.RemoveAll(d.volDir(req.GetVolumeId())); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.nodeID,
		MaxVolumesPerNode:  d.maxVolumes,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{"topology.hostpath.csi/node": d.nodeID}},
	}, nil
}

func nodeCap(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
	return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
}

func (d *driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		nodeCap(csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME),
		nodeCap(csi.NodeServiceCapability_RPC_GET_VOLUME_STATS),
		nodeCap(csi.NodeServiceCapability_RPC_EXPAND_VOLUME),
		nodeCap(csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER),
	}}, nil
}

// isMountPoint: whether path is the mount point of some mount (from /proc/self/mountinfo).
func isMountPoint(path string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescape(f[4]) == p {
			return true, nil
		}
	}
	return false, nil
}

func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func describe(c *csi.VolumeCapability) map[string]any {
	m := map[string]any{"accessMode": c.GetAccessMode().GetMode().String()}
	if mnt := c.GetMount(); mnt != nil {
		m["fsType"] = mnt.GetFsType()
		m["mountFlags"] = mnt.GetMountFlags()
	}
	if c.GetBlock() != nil {
		m["block"] = true
	}
	return m
}

func (d *driver) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	d.record("NodeStageVolume", map[string]any{
		"volumeId": req.GetVolumeId(), "stagingTargetPath": req.GetStagingTargetPath(),
		"volumeContext": req.GetVolumeContext(), "publishContext": req.GetPublishContext(),
		"secrets": req.GetSecrets(), "capability": describe(req.GetVolumeCapability()),
	})
	if req.GetVolumeId() == "" || req.GetStagingTargetPath() == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume id, staging target path and capability are required")
	}
	src := d.volDir(req.GetVolumeId())
	if _, err := os.Stat(src); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetVolumeId())
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		if _, err := d.attachLoop(req.GetVolumeId()); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &csi.NodeStageVolumeResponse{}, nil
	}
	st, err := os.Stat(req.GetStagingTargetPath())
	if err != nil || !st.IsDir() {
		return nil, status.Errorf(codes.FailedPrecondition, "staging target path %s is not a directory", req.GetStagingTargetPath())
	}
	if m, err := isMountPoint(req.GetStagingTargetPath()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if m {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := unix.Mount(src, req.GetStagingTargetPath(), "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s on %s: %v", src, req.GetStagingTargetPath(), err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	d.record("NodeUnstageVolume", map[string]any{"volumeId": req.GetVolumeId(), "stagingTargetPath": req.GetStagingTargetPath()})
	if req.GetVolumeId() == "" || req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and staging target path are required")
	}
	for {
		m, err := isMountPoint(req.GetStagingTargetPath())
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if !m {
			if err := d.detachLoop(req.GetVolumeId()); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			return &csi.NodeUnstageVolumeResponse{}, nil
		}
		if err := unix.Unmount(req.GetStagingTargetPath(), 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", req.GetStagingTargetPath(), err)
		}
	}
}

func (d *driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	d.record("NodePublishVolume", map[string]any{
		"volumeId": req.GetVolumeId(), "stagingTargetPath": req.GetStagingTargetPath(), "targetPath": req.GetTargetPath(),
		"volumeContext": req.GetVolumeContext(), "publishContext": req.GetPublishContext(), "readonly": req.GetReadonly(),
		"secrets": req.GetSecrets(), "capability": describe(req.GetVolumeCapability()),
	})
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume id, target path and capability are required")
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return d.publishBlock(req)
	}
	// A CSI ephemeral inline volume (as hostpathplugin: the pod info says so): no staging, a
	// fresh folder per volume id, removed at unpublish.
	src := req.GetStagingTargetPath()
	if req.GetVolumeContext()["csi.storage.k8s.io/ephemeral"] == "true" {
		if src != "" {
			return nil, status.Error(codes.InvalidArgument, "ephemeral volumes are never staged")
		}
		src = d.ephemeralDir(req.GetVolumeId())
		if err := os.MkdirAll(src, 0o777); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if err := os.Chmod(src, 0o777); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	} else {
		if src == "" {
			return nil, status.Error(codes.FailedPrecondition, "staging target path missing: this driver stages")
		}
		if m, err := isMountPoint(src); err != nil || !m {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", req.GetVolumeId(), src)
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if m, err := isMountPoint(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if m {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind on %s: %v", target, err)
	}
	if req.GetReadonly() {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// ---- raw block volumes: a loop device over <statedir>/block/<id>.img ----

func (d *driver) blockImage(id string) string { return filepath.Join(d.stateDir, "block", id+".img") }
func (d *driver) loopRecord(id string) string { return filepath.Join(d.stateDir, "block", id+".loop") }

// attachLoop: the volume's loop device, attached at staging (idempotent).
func (d *driver) attachLoop(id string) (string, error) {
	if b, err := os.ReadFile(d.loopRecord(id)); err == nil {
		dev := strings.TrimSpace(string(b))
		if out, err := exec.Command("losetup", "-j", d.blockImage(id)).Output(); err == nil && strings.HasPrefix(string(out), dev+":") {
			return dev, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(d.blockImage(id)), 0o750); err != nil {
		return "", err
	}
	if _, err := os.Stat(d.blockImage(id)); errors.Is(err, os.ErrNotExist) {
		size := d.capacity(id)
		if size < 1<<20 {
			size = 1 << 20
		}
		f, err := os.Create(d.blockImage(id))
		if err != nil {
			return "", err
		}
		err = f.Truncate(size)
		_ = f.Close()
		if err != nil {
			return "", err
		}
	}
	out, err := exec.Command("losetup", "-f", "--show", d.blockImage(id)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup %s: %v: %s", d.blockImage(id), err, out)
	}
	dev := strings.TrimSpace(string(out))
	return dev, os.WriteFile(d.loopRecord(id), []byte(dev), 0o640)
}

func (d *driver) detachLoop(id string) error {
	b, err := os.ReadFile(d.loopRecord(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if out, err := exec.Command("losetup", "-d", strings.TrimSpace(string(b))).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d: %v: %s", err, out)
	}
	return os.Remove(d.loopRecord(id))
}

// publishBlock: the target is a file the driver makes and bind-mounts the device on.
func (d *driver) publishBlock(req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	b, err := os.ReadFile(d.loopRecord(req.GetVolumeId()))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "block volume %s is not staged", req.GetVolumeId())
	}
	dev := strings.TrimSpace(string(b))
	if m, err := isMountPoint(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if m {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDWR, 0o660)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	_ = f.Close()
	if err := unix.Mount(dev, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s on %s: %v", dev, target, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	d.record("NodeUnpublishVolume", map[string]any{"volumeId": req.GetVolumeId(), "targetPath": req.GetTargetPath()})
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and target path are required")
	}
	for {
		m, err := isMountPoint(target)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if !m {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// An ephemeral volume ends with its only publication.
	if err := os.RemoveAll(d.ephemeralDir(req.GetVolumeId())); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (d *driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" || req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and volume path are required")
	}
	var s unix.Statfs_t
	if err := unix.Statfs(req.GetVolumePath(), &s); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, status.Errorf(codes.NotFound, "%s: %v", req.GetVolumePath(), err)
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.record("NodeGetVolumeStats", map[string]any{"volumeId": req.GetVolumeId(), "volumePath": req.GetVolumePath(), "stagingTargetPath": req.GetStagingTargetPath()})
	bs := int64(s.Bsize)
	total, avail, used := int64(s.Blocks)*bs, int64(s.Bavail)*bs, int64(s.Blocks-s.Bfree)*bs
	// A volume with a recorded size reports it (as a quota'd volume would): the bytes of its
	// files are the used part.
	if c := d.capacity(req.GetVolumeId()); c > 0 {
		used = 0
		_ = filepath.Walk(req.GetVolumePath(), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				used += fi.Size()
			}
			return nil
		})
		total, avail = c, max(c-used, 0)
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: total, Available: avail, Used: used},
			{Unit: csi.VolumeUsage_INODES, Total: int64(s.Files), Available: int64(s.Ffree), Used: int64(s.Files - s.Ffree)},
		},
		VolumeCondition: &csi.VolumeCondition{Abnormal: false, Message: "ok"},
	}, nil
}

func (d *driver) NodeExpandVolume(_ context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	d.record("NodeExpandVolume", map[string]any{"volumeId": req.GetVolumeId(), "volumePath": req.GetVolumePath(), "requiredBytes": req.GetCapacityRange().GetRequiredBytes()})
	if req.GetVolumeId() == "" || req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and volume path are required")
	}
	if m, err := isMountPoint(req.GetVolumePath()); err != nil || !m {
		return nil, status.Errorf(codes.NotFound, "volume path %s is not mounted", req.GetVolumePath())
	}
	if err := d.setCapacity(req.GetVolumeId(), req.GetCapacityRange().GetRequiredBytes()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes()}, nil
}

// ---- registrar ----

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("GetInfo")
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: r.name, Endpoint: r.endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	log.Printf("NotifyRegistrationStatus: registered=%v error=%q", s.PluginRegistered, s.Error)
	if !s.PluginRegistered {
		log.Printf("registration failed, exiting as node-driver-registrar does")
		os.Exit(1)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func runRegistrar(args []string) {
	fs := flag.NewFlagSet("registrar", flag.ExitOnError)
	csiAddress := fs.String("csi-address", "", "the driver's socket as this process sees it")
	kubeletPath := fs.String("kubelet-registration-path", "", "the driver's socket as the kubelet sees it")
	regDir := fs.String("plugin-registration-path", "/registration", "the kubelet's plugins_registry")
	_ = fs.Parse(args)
	if *csiAddress == "" || *kubeletPath == "" {
		log.Fatal("--csi-address and --kubelet-registration-path are required")
	}
	addr := strings.TrimPrefix(*csiAddress, "unix://")
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	var name string
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			name = info.GetName()
			break
		}
		if i > 30 {
			log.Fatalf("GetPluginInfo on %s: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = conn.Close()
	sock := filepath.Join(*regDir, fmt.Sprintf("%s-reg.sock", name))
	l := listenUnix(sock)
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registrar{name: name, endpoint: *kubeletPath})
	onSignal(func() { srv.Stop(); _ = os.Remove(sock) })
	log.Printf("registrar for %s serving on %s", name, sock)
	if err := srv.Serve(l); err != nil {
		log.Fatal(err)
	}
}

// ---- create-volume ----

func runCreateVolume(args []string) {
	fs := flag.NewFlagSet("create-volume", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "unix:///path/to/csi.sock")
	name := fs.String("name", "", "the volume name (the external-provisioner uses the PV name)")
	size := fs.Int64("size", 1<<20, "required bytes")
	_ = fs.Parse(args)
	if *name == "" || !strings.HasPrefix(*endpoint, "unix://") {
		log.Fatal("--endpoint unix://... and --name are required")
	}
	conn, err := grpc.NewClient(*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := csi.NewControllerClient(conn).CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:          *name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: *size},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		}},
	})
	if err != nil {
		log.Fatalf("CreateVolume: %v", err)
	}
	b, _ := json.Marshal(resp.GetVolume().GetVolumeContext())
	fmt.Println(resp.GetVolume().GetVolumeId())
	fmt.Println(string(b))
}
