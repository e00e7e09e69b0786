//! Caps on pins: how many, and how many pages, over the mount and per user.
//! They bound what pins hold of the media and of the daemon's time; the
//! page model's DRAM follows the runs of the pinned ranges, not their pages.

use super::{Pages, State};

/// Caps on pins (mount options `max_pins`, `max_pinned`, `max_pins_per_user`,
/// `max_pinned_per_user`): the number of live pins and of pinned pages, over
/// the whole mount and per user. The number of pins bounds the daemon's
/// memory (a pin costs DRAM per run of its range, not per page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinLimits {
    pub pins: u64,
    pub pages: u64,
    pub user_pins: u64,
    pub user_pages: u64,
}

impl PinLimits {
    /// No caps: the core's own users (tests, benchmarks, the crash harness)
    /// until a mount sets them (`Pages::set_limits`, from the mount options).
    pub const UNLIMITED: PinLimits = PinLimits {
        pins: u64::MAX,
        pages: u64::MAX,
        user_pins: u64::MAX,
        user_pages: u64::MAX,
    };
}

/// The mount options' defaults.
impl Default for PinLimits {
    fn default() -> Self {
        PinLimits {
            pins: 65_536,
            pages: (1u64 << 30) / 4096,
            user_pins: 16_384,
            user_pages: (256u64 << 20) / 4096,
        }
    }
}

/// Which cap refused a pin (the FUSE edge answers ENOMEM, as GUP's
/// RLIMIT_MEMLOCK accounting does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinLimitHit {
    Pins,
    Pages,
    UserPins,
    UserPages,
}

impl std::fmt::Display for PinLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PinLimitHit::Pins => "max_pins",
            PinLimitHit::Pages => "max_pinned",
            PinLimitHit::UserPins => "max_pins_per_user",
            PinLimitHit::UserPages => "max_pinned_per_user",
        })
    }
}

/// Pins and pinned pages of one user.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Usage {
    pub(super) pins: u64,
    pub(super) pages: u64,
}

impl Pages {
    /// Set the caps on pins (mount options).
    pub fn set_limits(&self, l: PinLimits) {
        self.state.lock().limits = l;
    }

    pub fn limits(&self) -> PinLimits {
        self.state.lock().limits
    }

    /// Would a pin of `pages` pages by `uid` fit under the caps now?
    pub fn may_pin(&self, uid: u32, limit_user: bool, pages: u64) -> Result<(), PinLimitHit> {
        Self::fits(&self.state.lock(), uid, limit_user, pages)
    }

    pub(super) fn fits(
        s: &State,
        uid: u32,
        limit_user: bool,
        pages: u64,
    ) -> Result<(), PinLimitHit> {
        let l = &s.limits;
        if s.pins.len() as u64 >= l.pins {
            return Err(PinLimitHit::Pins);
        }
        if s.pinned_pages.saturating_add(pages) > l.pages {
            return Err(PinLimitHit::Pages);
        }
        if limit_user {
            let u = s.usage.get(&uid).copied().unwrap_or_default();
            if u.pins >= l.user_pins {
                return Err(PinLimitHit::UserPins);
            }
            if u.pages.saturating_add(pages) > l.user_pages {
                return Err(PinLimitHit::UserPages);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{runs_of, PageModel, PinRequest, ZERO_PAGE};
    use super::*;

    fn req(holder: u64, uid: u32, blocks: Vec<u64>) -> PinRequest {
        let n = blocks.len();
        PinRequest {
            holder,
            uid,
            limit_user: uid != 0,
            ino: 5,
            index: 0,
            runs: runs_of(&blocks, &vec![vec![(5, 0)]; n]),
            write: false,
            longterm: false,
        }
    }

    #[test]
    fn caps_per_user_and_overall_and_release_by_holder() {
        for model in [PageModel::Legacy, PageModel::Upstream, PageModel::Proxy] {
            let p = Pages::new(model, std::time::Duration::from_millis(1));
            p.set_limits(PinLimits {
                pins: 5,
                pages: 9,
                user_pins: 2,
                user_pages: 3,
            });
            let a = p.pin(req(1, 7, vec![10])).unwrap();
            assert_eq!(
                p.pin(req(1, 7, vec![11, 12, 13])),
                Err(PinLimitHit::UserPages)
            );
            p.pin(req(2, 7, vec![ZERO_PAGE, 11])).unwrap();
            assert_eq!(p.pin(req(3, 7, vec![12])), Err(PinLimitHit::UserPins));
            // Not held to the per-user caps, but to the mount's.
            p.pin(req(3, 0, vec![20, 21, 22, 23])).unwrap();
            assert_eq!(p.pin(req(3, 0, vec![24, 25, 26])), Err(PinLimitHit::Pages));
            p.pin(req(3, 0, vec![24])).unwrap();
            p.pin(req(4, 8, vec![30])).unwrap();
            assert_eq!(p.pin(req(4, 8, vec![])), Err(PinLimitHit::Pins));
            // The zero page is counted, never pinned or described.
            assert!(!p.tracked_blocks().contains(&ZERO_PAGE));
            assert_eq!(p.pins_of_holder(3).len(), 2);
            assert_eq!(p.pins_of_holder(1), vec![a]);
            for id in p.pins_of_holder(3) {
                p.unpin(id).unwrap();
            }
            p.unpin(a).unwrap();
            assert!(p.pins_of_holder(3).is_empty());
            // Released: uid 7 may pin again, uid 0 too.
            p.pin(req(1, 7, vec![10])).unwrap();
            p.pin(req(3, 0, vec![40, 41])).unwrap();
            assert!(p.check(&|_| vec![(5, 0)], &|_| true).is_empty());
        }
    }
}
