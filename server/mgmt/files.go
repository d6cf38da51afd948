package mgmt

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/server/files"
)

// fileStore returns the node's file store, or ENOTSUPPORTED.
func (s *Server) fileStore() (*files.Store, error) {
	if s.o.Files == nil {
		return nil, tether.Errorf(tether.ENOTSUPPORTED, "this server node stores no files")
	}
	return s.o.Files, nil
}

// uploadFile streams the body to the file store: it is never held in
// memory, and a body announced larger than the limit is refused unread.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, caller *tether.Token) error {
	store, err := s.fileStore()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	name, want := q.Get("name"), q.Get("sha256")
	if err := files.CheckName("name", name); err != nil {
		return err
	}
	if want != "" {
		if err := files.CheckSHA256("sha256", want); err != nil {
			return err
		}
	}
	if r.ContentLength > store.MaxBytes() {
		return &tether.Error{Code: tether.ETOOLARGE,
			Message: fmt.Sprintf("the file is %d bytes, over the limit of %d bytes (files.max_bytes)", r.ContentLength, store.MaxBytes())}
	}
	info, created, err := store.Put(r.Context(), name, caller.Name, r.Body, want)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.o.Log.Info("file uploaded", "sha256", info.SHA256, "name", info.Name, "size", info.Size, "user", caller.Name)
	}
	writeJSON(w, status, fileJSON(info))
	return nil
}

func (s *Server) listFiles(w http.ResponseWriter, _ *http.Request, _ *tether.Token) error {
	store, err := s.fileStore()
	if err != nil {
		return err
	}
	list, err := store.List()
	if err != nil {
		return err
	}
	out := api.FileList{Items: make([]api.File, 0, len(list))}
	for _, f := range list {
		out.Items = append(out.Items, fileJSON(f))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request, _ *tether.Token) error {
	store, err := s.fileStore()
	if err != nil {
		return err
	}
	info, err := store.Stat(r.PathValue("sha256"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, fileJSON(info))
	return nil
}

func fileJSON(f *files.Info) api.File {
	return api.File{Name: f.Name, Size: f.Size, SHA256: f.SHA256, UploadedAt: f.UploadedAt.UTC(),
		Uploader: f.Uploader, Signature: f.Signature}
}

// releasePublicKey is the release-signing public key handed to agents at
// enrollment ("" when this node stores no files).
func (s *Server) releasePublicKey() string {
	if s.o.Files == nil {
		return ""
	}
	return files.EncodePublicKey(s.o.Files.PublicKey())
}

// checkUpgrade checks, for an upgrade command, that the file it names is
// stored here and that its signature is this server's: otherwise every
// agent would fail the order. Arguments the action's schema refuses are
// left to the command manager, which names them.
func (s *Server) checkUpgrade(a api.Action) error {
	if a.Name != "upgrade" || s.o.Files == nil {
		return nil
	}
	var args struct {
		SHA256    string `json:"sha256"`
		Signature string `json:"signature"`
	}
	if json.Unmarshal(a.Args, &args) != nil || files.CheckSHA256("sha256", args.SHA256) != nil {
		return nil
	}
	info, err := s.o.Files.Stat(args.SHA256)
	if tether.ErrorCode(err) == tether.ENOTFOUND {
		return tether.FieldError("action.args.sha256", "no file %s on the server: upload it first (tetherctl files upload)", args.SHA256)
	}
	if err != nil {
		return err
	}
	if args.Signature != "" && args.Signature != info.Signature {
		return tether.FieldError("action.args.signature", "not this server's signature of file %s (see GET /api/v1/files/%s)", args.SHA256, args.SHA256)
	}
	return nil
}
