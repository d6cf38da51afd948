package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// run is the background work of the sink: it closes files that reached
// their age limit, compresses closed files and applies retention, after a
// file was closed and at every tick, until ctx ends.
func (s *Sink) run(ctx context.Context) {
	defer close(s.done)
	var enc *zstd.Encoder // reused from one file to the next
	defer func() {
		if enc != nil {
			enc.Close()
		}
	}()
	timer := time.NewTicker(s.opts.tick)
	defer timer.Stop()
	s.logErr(s.tidy(ctx, &enc))
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			s.logErr(s.tidy(ctx, &enc))
		case <-timer.C:
			s.rotateIfOld()
			s.logErr(s.tidy(ctx, &enc))
		case reply := <-s.tidyReq:
			s.rotateIfOld()
			reply <- s.tidy(ctx, &enc)
		}
	}
}

func (s *Sink) logErr(err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		s.opts.Log.Warn("event files: background work failed; retrying at the next check", "dir", s.dir, "err", err)
	}
}

// tidy compresses the closed plain files, oldest first, then deletes the
// closed files that retention gives up.
func (s *Sink) tidy(ctx context.Context, enc **zstd.Encoder) error {
	segs, curSize, err := s.closedSegments()
	if err != nil {
		return err
	}
	var errs []error
	for _, sg := range segs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !sg.plain {
			continue
		}
		path := filepath.Join(s.dir, sg.base)
		if ok, err := s.repair(sg.base); !ok {
			errs = append(errs, fmt.Errorf("cut back %s after a failed write: %w", sg.base, err))
			continue
		} else if fi, err := os.Stat(path); err == nil {
			sg.plainSize = fi.Size()
		}
		switch {
		case sg.plainSize == 0, sg.zst:
			// Empty, or compressed before a crash or a Close came
			// between the rename and the removal.
			if err := removeIfExists(path); err != nil {
				errs = append(errs, err)
				continue
			}
			sg.plain, sg.plainSize = false, 0
		case s.opts.Uncompressed:
		default:
			if err := s.compress(ctx, enc, sg); err != nil {
				errs = append(errs, fmt.Errorf("compress %s: %w", sg.base, err))
			}
		}
	}
	if err := s.expire(segs, curSize); err != nil {
		errs = append(errs, err)
	}
	if err := syncDir(s.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closedSegments returns the segments other than the open file, with the
// sizes and times they have now, and the size of the open file.
func (s *Sink) closedSegments() ([]*segment, int64, error) {
	segs, err := listSegments(s.dir)
	if err != nil {
		return nil, 0, err
	}
	// Read after the listing: a file listed that is not the open one now
	// is closed, and stays as it is; stat it again for its final size.
	cur := s.current()
	var closed []*segment
	var curSize int64
	for _, sg := range segs {
		path := filepath.Join(s.dir, sg.base)
		if sg.base == cur {
			if fi, err := os.Stat(path); err == nil {
				curSize = fi.Size()
			}
			continue
		}
		sg.plain, sg.zst = false, false
		if fi, err := os.Stat(path); err == nil {
			sg.plain, sg.plainSize, sg.plainMod = true, fi.Size(), fi.ModTime()
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
		if fi, err := os.Stat(path + zstSuffix); err == nil {
			sg.zst, sg.zstSize, sg.zstMod = true, fi.Size(), fi.ModTime()
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
		if sg.plain || sg.zst {
			closed = append(closed, sg)
		}
	}
	return closed, curSize, nil
}

// compress writes the zstd copy of a closed plain file next to it, then
// removes the plain file; see the package comment for what a crash leaves.
// The copy keeps the plain file's modification time (that of its last
// event), which retention goes by.
func (s *Sink) compress(ctx context.Context, enc **zstd.Encoder, sg *segment) (err error) {
	path := filepath.Join(s.dir, sg.base)
	// A file given up after a failed write may end in a partial line.
	if _, err := cutPartialLine(path, sg.plainSize); err != nil {
		return err
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	tmp := path + zstSuffix + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	if *enc == nil {
		if *enc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1)); err != nil {
			return err
		}
	}
	(*enc).Reset(dst)
	if _, err := io.Copy(*enc, ctxReader{ctx, src}); err != nil {
		return err
	}
	if err := (*enc).Close(); err != nil {
		return err
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
		return err
	}
	zfi, err := os.Stat(tmp)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path+zstSuffix); err != nil {
		return err
	}
	renamed = true
	sg.zst, sg.zstSize, sg.zstMod = true, zfi.Size(), fi.ModTime()
	// The rename must be durable before the plain file goes.
	if err := syncDir(s.dir); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	sg.plain, sg.plainSize = false, 0
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// expire deletes closed segments, oldest first, while the oldest is older
// than MaxAge or the directory takes more than MaxTotalBytes.
func (s *Sink) expire(segs []*segment, curSize int64) error {
	if s.opts.MaxAge <= 0 && s.opts.MaxTotalBytes <= 0 {
		return nil
	}
	total := curSize
	for _, sg := range segs {
		total += sg.size()
	}
	now := s.opts.now()
	var (
		removed int
		freed   int64
		errs    []error
	)
	for _, sg := range segs {
		tooOld := s.opts.MaxAge > 0 && now.Sub(sg.modTime()) > s.opts.MaxAge
		tooBig := s.opts.MaxTotalBytes > 0 && total > s.opts.MaxTotalBytes
		if !tooOld && !tooBig {
			break
		}
		path := filepath.Join(s.dir, sg.base)
		// The compressed copy last: a crash in between leaves it, not a
		// plain file that would be compressed again.
		err := removeIfExists(path)
		if err == nil {
			err = removeIfExists(path + zstSuffix)
		}
		if err != nil {
			errs = append(errs, err)
			break
		}
		removed++
		freed += sg.size()
		total -= sg.size()
	}
	if removed > 0 {
		s.opts.Log.Info("event files: retention deleted the oldest files", "dir", s.dir, "files", removed, "bytes", freed,
			"max_age", s.opts.MaxAge, "max_total_bytes", s.opts.MaxTotalBytes)
	}
	return errors.Join(errs...)
}
