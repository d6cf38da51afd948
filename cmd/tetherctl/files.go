package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tetherhq/tether/api"
)

func (a *app) filesCommand() *cobra.Command {
	cmd := group("files", "Upload and list the files agents download",
		`Files (agent upgrades, plugin binaries, shared files) are stored on the
server under the SHA-256 of their bytes and signed by the server's
release-signing key; agents download them from the comms listener at
/api/v1/files/SHA256 and check the signature with the key they pinned at
enrollment. 'tetherctl agents upgrade' uploads a binary and sends the upgrade.`,
		"file")
	cmd.AddCommand(a.filesUploadCommand(), a.filesListCommand(), a.filesShowCommand())
	return cmd
}

func (a *app) filesUploadCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "upload FILE",
		Short: "Upload a file",
		Long: `Upload FILE to the server, under --name (default: FILE's base name). tetherctl
computes its SHA-256 first: when the server already holds those bytes it does
not send them again and shows the stored file (its first name). The server
checks the bytes it received have that digest. On a terminal a progress bar
on stderr follows large uploads.

It prints the stored file: name, size, SHA-256 and the server's signature
(with -o json, the file object).`,
		Example: `  tetherctl files upload ./tether-agent-linux-amd64
  tetherctl files upload build/agent --name tether-agent-2.1.0-linux-arm64
  tetherctl files upload plugin.tar.gz -o json | jq -r .sha256`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.Flags().StringVar(&name, "name", "", "store the file under `NAME` (default: the file's base name)")
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		f, uploaded, err := a.upload(ctx, c, args[0], name)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(f)
		}
		what := "uploaded"
		if !uploaded {
			what = "already on the server, not sent again"
		}
		fmt.Fprintf(a.stdout, "file %s %s\n", f.SHA256, what)
		return a.fileFields(f)
	})
	return cmd
}

// upload uploads the file at path under name (default: its base name),
// unless the server already holds its bytes. It returns the stored file
// and whether its bytes were sent.
func (a *app) upload(ctx context.Context, c *api.Client, path, name string) (*api.File, bool, error) {
	if name == "" {
		name = filepath.Base(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, usagef("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, usagef("%v", err)
	}
	if !st.Mode().IsRegular() {
		return nil, false, usagef("%s is not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	stored, err := c.GetFile(ctx, sum)
	switch {
	case err == nil:
		return stored, false, nil
	case !api.IsNotFound(err):
		return nil, false, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	bar := newByteProgress(a.stderr, st.Size())
	stored, err = c.UploadFile(ctx, api.Upload{Name: name, Body: bar.reader(f), Size: st.Size(), SHA256: sum})
	bar.done()
	if err != nil {
		return nil, false, err
	}
	return stored, true, nil
}

// fileFields prints a file's metadata as aligned fields.
func (a *app) fileFields(f *api.File) error {
	return fields(a.stdout,
		"Name", f.Name,
		"SHA256", f.SHA256,
		"Size", humanBytes(f.Size),
		"Uploaded", stamp(f.UploadedAt),
		"Uploader", f.Uploader,
		"Signature", f.Signature,
	)
}

func (a *app) filesListCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the stored files, newest first",
		Example: `  tetherctl files list
  tetherctl files list -o json | jq -r '.items[] | [.sha256, .name] | @tsv'`,
		Args: argsUsage(cobra.NoArgs),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, _ []string) error {
		list, err := c.ListFiles(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(list)
		}
		t := newTable(a.stdout, "SHA256", "NAME", "SIZE", "UPLOADED", "UPLOADER")
		for _, f := range list.Items {
			t.row(f.SHA256, f.Name, humanBytes(f.Size), ago(f.UploadedAt), f.Uploader)
		}
		return t.flush()
	})
	return cmd
}

func (a *app) filesShowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show SHA256",
		Aliases: []string{"get"},
		Short:   "Show a stored file and its signature",
		Example: `  tetherctl files show 9f86d081…
  tetherctl files show 9f86d081… -o json | jq -r .signature`,
		Args: argsUsage(cobra.ExactArgs(1)),
	}
	cmd.RunE = a.action(func(ctx context.Context, c *api.Client, args []string) error {
		f, err := c.GetFile(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(f)
		}
		return a.fileFields(f)
	})
	return cmd
}

// humanBytes formats n bytes with a binary unit: 512 B, 1.5 KiB, 20.0 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
