//! Known bugs the harness must catch: switches in the journal and the core,
//! and in the direct-access client it runs (`direct.rs`).

use crate::journal::Inject;

/// Known bug kinds the harness must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The journal skips the flush of the first in-place store of each commit.
    SkipFlush,
    /// The journal skips the fence between the commit record and the in-place stores.
    SkipFence,
    /// Removing a directory entry zeroes it in place, before and outside the journal.
    DirentInPlace,
    /// The journal stores the entries in place before writing the commit record.
    ApplyBeforeCommit,
    /// A change cut into several transactions writes no intent record.
    NoIntent,
    /// fsync does not write the inode's lazy times.
    FsyncNoTimes,
    /// The direct client stores without writing its cache lines back.
    DirectSkipFlush,
    /// The direct client ends an access without a fence.
    DirectSkipFence,
    /// The direct client stores one block past the one its map gives.
    DirectWrongBlock,
    /// The direct client ignores the generation (a recalled map is used).
    DirectStaleMap,
}

impl Bug {
    pub const ALL: [Bug; 10] = [
        Bug::SkipFlush,
        Bug::SkipFence,
        Bug::DirentInPlace,
        Bug::ApplyBeforeCommit,
        Bug::NoIntent,
        Bug::FsyncNoTimes,
        Bug::DirectSkipFlush,
        Bug::DirectSkipFence,
        Bug::DirectWrongBlock,
        Bug::DirectStaleMap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipFlush => "skip-flush",
            Bug::SkipFence => "skip-fence",
            Bug::DirentInPlace => "dirent-in-place",
            Bug::ApplyBeforeCommit => "apply-before-commit",
            Bug::NoIntent => "no-intent",
            Bug::FsyncNoTimes => "fsync-no-times",
            Bug::DirectSkipFlush => "direct-skip-flush",
            Bug::DirectSkipFence => "direct-skip-fence",
            Bug::DirectWrongBlock => "direct-wrong-block",
            Bug::DirectStaleMap => "direct-stale-map",
        }
    }

    pub fn parse(s: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The journal and core switches (the direct client's bugs are planted
    /// by the client itself).
    pub fn inject(self) -> Inject {
        let mut i = Inject::default();
        match self {
            Bug::SkipFlush => i.skip_apply_flush = true,
            Bug::SkipFence => i.skip_commit_fence = true,
            Bug::DirentInPlace => i.dirent_in_place = true,
            Bug::ApplyBeforeCommit => i.apply_before_commit = true,
            Bug::NoIntent => i.no_intent = true,
            Bug::FsyncNoTimes => i.fsync_no_times = true,
            Bug::DirectSkipFlush
            | Bug::DirectSkipFence
            | Bug::DirectWrongBlock
            | Bug::DirectStaleMap => {}
        }
        i
    }
}
