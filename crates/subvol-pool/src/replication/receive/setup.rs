//! Phase 1 of a receive, under the pool lock: the private image the stream
//! is applied to. A new stream gets a new image, a clone (or copy) of its
//! base; a resumed stream reopens the image its partial receive left. The
//! image is flocked for as long as the receive holds it, so a second
//! receive into the same subvolume, or `receive --abort`, sees it is busy.

use super::adopt::AdoptIntent;
use super::partial::{read_state, PartialState, ResumeRecord};
use super::space_floor::SpaceFloor;
use super::target::Target;
use super::verify::BaseInfo;
use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::io_sizes::BLOCK_SIZE;
use crate::kernel::KernelView;
use crate::subvolume::open_image;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// What setup hands to the next phases.
pub(super) struct Prepared {
    /// The private image, flocked.
    pub(super) image: File,
    /// What becomes of the subvolume when the snapshot is published.
    pub(super) target: Target,
    /// The host's free space the apply phase must not cross.
    pub(super) floor: SpaceFloor,
    /// The private image is NAME's own (`adopt`): what puts NAME back.
    pub(super) adopted: Option<AdoptIntent>,
    /// The base snapshot and its manifest (incremental streams), for the
    /// content check at the end of phase 2.
    pub(super) base: Option<BaseInfo>,
}

impl Receive<'_> {
    /// Sets up the private image: reopened for a resumed stream, made for a
    /// new one. The caller holds the pool lock.
    pub(super) fn set_up(&mut self) -> Result<Prepared> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(self.pool.layout.receive_dir())
            .map_err(|e| Error::io("cannot create the receive dir", e))?;
        let state = read_state(&self.partial.state)?;
        // A token of offset 0 (the receive broke before its first
        // checkpoint) gives a stream that starts at 0 like a new one: it
        // continues the partial receive it names all the same.
        let h = &self.header;
        let continues_from_start = self.opts.resume
            && state.as_ref().is_some_and(|st| {
                st.offset == 0
                    && st.header.snapshot.guid == h.snapshot.guid
                    && st.header.base.as_ref().map(|b| b.guid) == h.base.as_ref().map(|b| b.guid)
            });
        if h.resume_offset > 0 || continues_from_start {
            self.reopen(state)
        } else {
            self.create(state)
        }
    }

    /// A resumed stream continues the partial receive it was made for.
    fn reopen(&mut self, state: Option<PartialState>) -> Result<Prepared> {
        let n = &self.name;
        let Some(st) = state else {
            return Err(Error::invalid(format!("this is a resumed stream, but there is no partial receive into {n}")));
        };
        if !self.opts.resume {
            return Err(Error::invalid("this is a resumed stream; receive it with --resume"));
        }
        let h = &self.header;
        if st.header.snapshot.guid != h.snapshot.guid
            || st.header.base.as_ref().map(|b| b.guid) != h.base.as_ref().map(|b| b.guid)
            || st.offset != h.resume_offset
        {
            return Err(Error::invalid(format!(
                "the stream does not continue the partial receive into {n}; its token is {}",
                st.token()
            )));
        }
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.partial.image)
            .map_err(|e| Error::io("cannot open the partial receive", e))?;
        self.lock_image(&image)?;
        let (base, target) = self.check_target()?;
        let base = self.base_info(base.as_deref());
        Ok(Prepared { image, target, floor: self.pool.receive_space_floor(n)?, adopted: None, base })
    }

    /// A new stream: refused over a partial receive (which it would
    /// trample), checked, and given a new image.
    fn create(&mut self, state: Option<PartialState>) -> Result<Prepared> {
        let n = &self.name;
        if let Some(st) = &state {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "a partial receive into {n} exists; continue it with `subvol send --resume {} ...`, or drop it with `subvol receive {n} --abort`",
                    st.token()
                ),
            ));
        }
        // An image without a state nor a receive holding it is debris.
        if let Ok(f) = File::open(&self.partial.image) {
            self.lock_image(&f)?;
            drop(f);
            let _ = std::fs::remove_file(&self.partial.image);
        }
        self.clock.mark("header");
        let (base, target) = self.check_target()?;
        let floor = self.pool.receive_space_floor(&self.name)?;
        self.clock.mark("check");
        // NAME equals the base and nothing has it: its own image is the
        // clone of the base the stream applies to (one whole-image clone
        // per receive instead of two). Resumable receives keep a private
        // image, which may wait for days.
        let image_of_name = self.pool.layout.subvolume_image(&self.name);
        let target = match target {
            Target::Follows if KernelView::read()?.attached_by_inode(&image_of_name) => Target::Stays(format!(
                "{} is attached to a loop device (found by its inode); it keeps its content",
                self.name
            )),
            t => t,
        };
        if let (Some(bp), Target::Follows, false, true) =
            (base.as_deref(), &target, self.opts.resume, self.pool.meta.reflink)
        {
            let base_snap = bp.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let info = self.base_info(Some(bp));
            let (image, intent) = self.adopt(bp, &base_snap)?;
            return Ok(Prepared { image, target, floor, adopted: Some(intent), base: info });
        }
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.partial.image)
            .map_err(|e| Error::io(format!("cannot create {}", self.partial.image.display()), e))?;
        self.lock_image(&image)?;
        if let Err(e) = self.fill(&image, base.as_deref()) {
            let _ = std::fs::remove_file(&self.partial.image);
            return Err(e);
        }
        Ok(Prepared { image, target, floor, adopted: None, base: self.base_info(base.as_deref()) })
    }

    /// The base snapshot at `path` as the content check needs it.
    fn base_info(&self, path: Option<&Path>) -> Option<BaseInfo> {
        let (path, base) = (path?, self.header.base.as_ref()?);
        let snap = path.file_stem()?.to_string_lossy().into_owned();
        Some(BaseInfo::load(self.pool, format!("{}@{snap}", self.name), path, base.guid))
    }

    /// Makes the new image what the stream applies to: the base (or
    /// nothing), at the stream's size; a resumable receive records that
    /// nothing of the stream is applied yet.
    fn fill(&self, image: &File, base: Option<&Path>) -> Result<()> {
        // Records written in place over blocks shared with the base (long
        // ones, and short ones where staging is unavailable) are
        // copies-on-write; a one-block CoW extent size keeps XFS from
        // reserving up to 128 KiB of staging beyond each one (a hint only:
        // other filesystems refuse it, which is fine).
        let _ = subvol_os::hints::set_extent_hints(image, None, Some(BLOCK_SIZE as u32));
        if let Some(bp) = base {
            let b = open_image(bp, false).map_err(|e| Error::io("cannot open the base", e))?;
            if self.pool.meta.reflink {
                subvol_os::reflink::ficlone(image, &b).map_err(|e| Error::os("cannot clone the base", e))?;
            } else {
                let size = b.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
                image.set_len(size).map_err(|e| Error::io("cannot size the image", e))?;
                for (off, len) in subvol_os::alloc::data_ranges(&b, size)
                    .map_err(|e| Error::os("cannot find the data in the image", e))?
                {
                    subvol_os::copy::copy_range(&b, image, off, len, |_| {})
                        .map_err(|e| Error::os("cannot copy the base", e))?;
                }
            }
        }
        image.set_len(self.header.virtual_size).map_err(|e| Error::io("cannot size the received image", e))?;
        if self.opts.resume {
            image.sync_all().map_err(|e| Error::io("cannot sync the image", e))?;
            ResumeRecord::new(self.partial.state.clone(), self.header.clone()).save(0)?;
        }
        Ok(())
    }

    /// Takes the image's flock, or says another receive has it.
    fn lock_image(&self, image: &File) -> Result<()> {
        image
            .try_lock()
            .map_err(|_| Error::new(ErrorKind::Busy, format!("another receive into {} is running", self.name)))
    }
}
