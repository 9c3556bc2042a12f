package lab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// Image describes an initramfs (newc cpio, uncompressed: faster to unpack
// under TCG than gzip). Entries are written in the order added; parent
// directories are added automatically before their children. Adding the same
// path twice replaces the earlier entry.
type Image struct {
	entries []*entry
	index   map[string]int
}

type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindHostFile
	kindSymlink
	kindCharDev
)

type entry struct {
	kind         entryKind
	name         string // no leading slash
	mode         os.FileMode
	data         []byte
	hostPath     string
	target       string
	major, minor uint32
}

// NewImage returns an empty image.
func NewImage() *Image { return &Image{index: map[string]int{}} }

func clean(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		p = "."
	}
	return p
}

func (im *Image) add(e *entry) {
	e.name = clean(e.name)
	if dir := path.Dir(e.name); dir != "." && dir != "/" {
		if i, ok := im.index[dir]; !ok || im.entries[i].kind != kindDir {
			im.add(&entry{kind: kindDir, name: dir, mode: 0o755})
		}
	}
	if i, ok := im.index[e.name]; ok {
		im.entries[i] = e
		return
	}
	im.index[e.name] = len(im.entries)
	im.entries = append(im.entries, e)
}

// Dir adds a directory (and its parents).
func (im *Image) Dir(p string, perm os.FileMode) *Image {
	im.add(&entry{kind: kindDir, name: p, mode: perm.Perm()})
	return im
}

// File adds a regular file with the given contents.
func (im *Image) File(p string, data []byte, perm os.FileMode) *Image {
	im.add(&entry{kind: kindFile, name: p, data: data, mode: perm.Perm()})
	return im
}

// HostFile adds a regular file copied from hostPath when the image is
// written (big files are streamed, not held in memory).
func (im *Image) HostFile(p, hostPath string, perm os.FileMode) *Image {
	im.add(&entry{kind: kindHostFile, name: p, hostPath: hostPath, mode: perm.Perm()})
	return im
}

// Symlink adds a symbolic link p -> target.
func (im *Image) Symlink(p, target string) *Image {
	im.add(&entry{kind: kindSymlink, name: p, target: target, mode: 0o777})
	return im
}

// CharDev adds a character device node.
func (im *Image) CharDev(p string, major, minor uint32, perm os.FileMode) *Image {
	im.add(&entry{kind: kindCharDev, name: p, major: major, minor: minor, mode: perm.Perm()})
	return im
}

// BasicDevices adds /dev/console (5,1), /dev/null (1,3), /dev/ttyS0 (4,64),
// /dev/tty (5,0) and /dev/kmsg (1,11): enough for the kernel to give /init a
// console before it mounts devtmpfs.
func (im *Image) BasicDevices() *Image {
	im.CharDev("dev/console", 5, 1, 0o600)
	im.CharDev("dev/null", 1, 3, 0o666)
	im.CharDev("dev/tty", 5, 0, 0o666)
	im.CharDev("dev/ttyS0", 4, 64, 0o660)
	im.CharDev("dev/kmsg", 1, 11, 0o644)
	return im
}

// Names lists the entry names in write order (for tests and debugging).
func (im *Image) Names() []string {
	var n []string
	for _, e := range im.entries {
		n = append(n, e.name)
	}
	return n
}

// WriteTo writes the image as a newc cpio archive.
func (im *Image) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	cpw := cpio.NewWriter(bw)
	devIno := int64(1 << 30)
	for _, e := range im.entries {
		hdr := &cpio.Header{Name: e.name, Mode: cpio.FileMode(e.mode.Perm()), Links: 1}
		switch e.kind {
		case kindDir:
			hdr.Mode |= cpio.TypeDir
			hdr.Links = 2
			if err := cpw.WriteHeader(hdr); err != nil {
				return cw.n, err
			}
		case kindFile:
			hdr.Mode |= cpio.TypeReg
			hdr.Size = int64(len(e.data))
			if err := cpw.WriteHeader(hdr); err != nil {
				return cw.n, err
			}
			if _, err := cpw.Write(e.data); err != nil {
				return cw.n, fmt.Errorf("cpio %s: %w", e.name, err)
			}
		case kindHostFile:
			f, err := os.Open(e.hostPath)
			if err != nil {
				return cw.n, fmt.Errorf("cpio %s: %w", e.name, err)
			}
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return cw.n, err
			}
			hdr.Mode |= cpio.TypeReg
			hdr.Size = st.Size()
			if err := cpw.WriteHeader(hdr); err != nil {
				f.Close()
				return cw.n, err
			}
			_, err = io.Copy(cpw, f)
			f.Close()
			if err != nil {
				return cw.n, fmt.Errorf("cpio %s from %s: %w", e.name, e.hostPath, err)
			}
		case kindSymlink:
			hdr.Mode |= cpio.TypeSymlink
			hdr.Linkname = e.target
			hdr.Size = int64(len(e.target))
			if err := cpw.WriteHeader(hdr); err != nil {
				return cw.n, err
			}
			if _, err := cpw.Write([]byte(e.target)); err != nil {
				return cw.n, fmt.Errorf("cpio %s: %w", e.name, err)
			}
		case kindCharDev:
			// cavaliergopher/cpio v1.0.1 does not write rdevmajor/rdevminor
			// (its Header has no field for them), so device nodes get a
			// hand-written newc header between library entries.
			if err := cpw.Flush(); err != nil {
				return cw.n, err
			}
			devIno++
			if err := writeNewcDev(bw, e, devIno); err != nil {
				return cw.n, err
			}
		}
	}
	if err := cpw.Close(); err != nil {
		return cw.n, err
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

// writeNewcDev writes a zero-length newc entry for a character device.
func writeNewcDev(w io.Writer, e *entry, ino int64) error {
	mode := uint32(cpio.TypeChar) | uint32(e.mode.Perm())
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, 1, 0, 0, 0, 0, e.major, e.minor, len(e.name)+1, 0)
	buf := []byte(hdr + e.name + "\x00")
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	_, err := w.Write(buf)
	return err
}

// WriteFile writes the image to path atomically (temp file + rename).
func (im *Image) WriteFile(p string) error {
	f, err := os.CreateTemp(path.Dir(p), "."+path.Base(p)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := im.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
