package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Every file in configs/examples decodes strictly and validates: the
// examples are documentation and must never rot.
func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.toml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 2, "expected example configs in configs/examples")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			v, err := Load(file)
			require.NoError(t, err)
			require.NotEmpty(t, v.Name)
			require.NotEmpty(t, v.Memory)
			require.NotEqual(t, memspec.Mode(""), v.Mode, "defaults applied")
			require.NotEqual(t, ConsoleOutput(""), v.Console.Output, "defaults applied")
		})
	}
}

// demo.toml is the documented shape of the schema; check it field by field.
func TestDemoExampleContent(t *testing.T) {
	v, err := Load(filepath.Join("examples", "demo.toml"))
	require.NoError(t, err)
	require.Equal(t, &VM{
		Name:  "demo",
		Mode:  memspec.ModeNone,
		VCPUs: 2,
		Boot: Boot{
			Kernel:  "/var/lib/pmvm/images/vmlinuz",
			Initrd:  "/var/lib/pmvm/images/initrd.cpio",
			Cmdline: "console=ttyS0 panic=-1",
		},
		Memory:  []Memory{{Name: "ram0", Size: Size(512 * memspec.MiB), Backing: memspec.BackingAnonymous}},
		Console: Console{Output: ConsoleStdout},
		Agent:   Agent{Socket: "/run/pmvm/demo/agent.sock"},
		Control: Control{Socket: "/run/pmvm/demo/control.sock"},
	}, v)
	require.Equal(t, 512*memspec.MiB, v.TotalMemory())
}

// preserved_across_kexec decodes from its TOML key.
func TestDecodePreservedAcrossKexec(t *testing.T) {
	v, err := Decode("p.toml", strings.NewReader("[[memory]]\nname = \"ram0\"\nbacking = \"/dev/shm/x\"\npreserved_across_kexec = true\n"))
	require.NoError(t, err)
	require.True(t, v.Memory[0].PreservedAcrossKexec)
}

// An omitted console output means stdout; an omitted mode stays empty,
// for Validate to refuse (TestValidateRefusesMissingMode).
func TestDecodeDefaults(t *testing.T) {
	v, err := Decode("d.toml", strings.NewReader(`name = "d"`))
	require.NoError(t, err)
	require.Equal(t, memspec.Mode(""), v.Mode)
	require.Equal(t, ConsoleStdout, v.Console.Output)
}

// TestValidateRefusesMissingMode proves every VM must declare its mode:
// what its guest survives is never implied.
func TestValidateRefusesMissingMode(t *testing.T) {
	v, err := Decode("d.toml", strings.NewReader("name = \"d\"\nvcpus = 1\n[boot]\nkernel = \"/k\"\n[[memory]]\nname = \"ram0\"\nsize = \"64MiB\"\nbacking = \"anonymous\"\n[agent]\nsocket = \"/run/a.sock\"\n[control]\nsocket = \"/run/c.sock\"\n"))
	require.NoError(t, err)
	err = v.Validate()
	require.Error(t, err)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "mode", fe.Field)
	assert.Contains(t, err.Error(), `mode: missing; say what the guest must survive: mode = "reboot"`)
	v.Mode = memspec.ModeNone
	assert.NoError(t, v.Validate())
}

// An unknown key (a typo) is refused with the file, the line, the key and
// the table it appeared in; every unknown key is reported, not only the first.
func TestDecodeUnknownKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // one full error line per unknown key
	}{
		{
			name: "top-level typo",
			doc:  "name = \"x\"\nvcpu = 2\n",
			want: []string{`demo.toml:2: unknown key "vcpu" at top level`},
		},
		{
			name: "typo in a table",
			doc:  "name = \"x\"\n\n[boot]\nkernel = \"/k\"\ncmdlne = \"console=ttyS0\"\n",
			want: []string{`demo.toml:5: unknown key "cmdlne" in [boot]`},
		},
		{
			name: "typo in the second memory block",
			doc:  "[[memory]]\nname = \"a\"\n[[memory]]\nname = \"b\"\nsharred = true\n",
			want: []string{`demo.toml:5: unknown key "sharred" in [[memory]]`},
		},
		{
			name: "dotted key",
			doc:  "name = \"x\"\nconsole.ouput = \"none\"\n",
			want: []string{`demo.toml:2: unknown key "ouput" in [console]`},
		},
		{
			name: "unknown table",
			doc:  "name = \"x\"\n\n\n[machine]\nvcpu = 2\n",
			want: []string{`demo.toml:4: unknown table [machine]`},
		},
		{
			name: "several typos, all reported",
			doc:  "nme = \"x\"\n[agent]\nsock = \"/a\"\n[control]\nsockett = \"/c\"\n",
			want: []string{
				`demo.toml:1: unknown key "nme" at top level`,
				`demo.toml:3: unknown key "sock" in [agent]`,
				`demo.toml:5: unknown key "sockett" in [control]`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("demo.toml", strings.NewReader(tc.doc))
			require.Error(t, err)
			require.Equal(t, strings.Join(tc.want, "\n"), err.Error())
			var fe *FileError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, "demo.toml", fe.File)
		})
	}
}

// Syntax and type errors are reported as file:line:col: message.
func TestDecodeSyntaxAndTypeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unterminated array", "name = \"x\"\nvcpus = [\n", "x.toml:2:10: array is incomplete"},
		{"duplicate key", "name = \"x\"\nname = \"y\"\n", "x.toml:2:1: key name is already defined"},
		{"string where an integer belongs", "vcpus = \"two\"\n", "x.toml:1:9: vcpus: expected an integer, not a string"},
		{"boolean where a string belongs", "[boot]\nkernel = true\n", "x.toml:2:10: boot.kernel: expected a string, not a boolean"},
		{"date where a string belongs", "name = 1979-05-27\n", "x.toml:1:8: name: expected a string, not a local date"},
		{"scalar where [[memory]] belongs", "memory = 3\n", "x.toml:1:10: memory: expected [[memory]] blocks, not an integer"},
		{"negative size", "[[memory]]\nsize = -2\n", "x.toml:2:8: memory.size: negative integer"},
		{"bad size unit", "[[memory]]\nsize = \"2MB\"\n", `x.toml:2:8: size "2MB": unknown unit "MB"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("x.toml", strings.NewReader(tc.doc))
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tc.want), "got %q, want prefix %q", err.Error(), tc.want)
		})
	}
}

// A size that is neither an integer nor a string (a float) is refused even
// though go-toml gives no position for it; the file name is still there.
func TestDecodeFloatSize(t *testing.T) {
	_, err := Decode("x.toml", strings.NewReader("[[memory]]\nsize = 1.5\n"))
	require.ErrorContains(t, err, "x.toml")
	require.ErrorContains(t, err, `size "1.5": fractions are not accepted`)
}

// Load puts the file name in front of every validation problem.
func TestLoadPrefixesValidationErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.toml")
	doc := strings.Replace(readExample(t, "demo.toml"), "vcpus = 2", "vcpus = 0", 1)
	doc = strings.Replace(doc, `size = "512MiB"`, `size = "3MiB"`, 1)
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))

	_, err := Load(path)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3, err.Error())
	require.Equal(t, path+": vcpus: missing; set vcpus = 1..254", lines[0])
	require.Equal(t, path+`: memory[0] "ram0": size 3MiB is not a multiple of 2MiB`, lines[1])
	require.Equal(t, path+": memory: total 3MiB is less than the minimum 64MiB", lines[2])
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
}

// Load of a missing file says which file.
func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/pmvm.toml")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "/nonexistent/pmvm.toml")
}

// Load reports decoding errors with the path it was given.
func TestLoadUnknownKeyNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "typo.toml")
	doc := strings.Replace(readExample(t, "demo.toml"), "vcpus = 2", "vcpu = 2", 1)
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	_, err := Load(path)
	require.Error(t, err)
	require.Regexp(t, `^`+path+`:\d+: unknown key "vcpu" at top level$`, err.Error())
	var fe *FileError
	require.True(t, errors.As(err, &fe))
	require.Equal(t, lineOf(t, doc, "vcpu = 2"), fe.Line)
}

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", name))
	require.NoError(t, err)
	return string(b)
}

func lineOf(t *testing.T, doc, text string) int {
	t.Helper()
	for i, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, text) {
			return i + 1
		}
	}
	t.Fatalf("%q not in document", text)
	return 0
}
