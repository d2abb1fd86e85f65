//! [`Policy::decide`]: the one function that turns a request into a [`Verdict`], and
//! [`Policy::explain`], the line a technician reads about it.
//!
//! `decide` is a pure function of (policy, requester, target, classification, grants,
//! time). It applies DESIGN.md's precedence:
//!
//! 1. an `illegal` category blocks, for every group, always;
//! 2. a teacher's lesson override that *blocks*, covering the requester (their classroom
//!    or class) and the request, blocks it — before any grant: the teacher is in the
//!    room, closing something for this lesson, and a technician's ticketed unblock for a
//!    period of study (or another teacher's lesson allow) must not reopen it under them;
//!    a block is also the safe direction, and it ends with the lesson;
//! 3. an active grant (a technician's ticketed one, or a teacher's lesson allow)
//!    covering the requester and the request allows it;
//! 4. the group's `block_sites` block, its `allow_sites` allow; then, for groups that
//!    block them, IP-literal hosts are blocked;
//! 5. a category the group blocks at this moment blocks, naming the most severe;
//! 6. otherwise the group's mode decides (`blocklist` allows; `allowlist` allows only
//!    categories the group `allow`s and its `allow_sites`).
//!
//! It lives apart from [`crate::core::policy`] so that the policy does not depend on
//! grants: grants are validated against a policy, and decisions read both.

use chrono::{DateTime, Utc};

use crate::core::category::{CategoryId, CategorySet};
use crate::core::classify::Classification;
use crate::core::grants::{Effect, Grant, GrantKind};
use crate::core::group::{Group, Mode};
use crate::core::host::Target;
use crate::core::policy::Policy;
use crate::core::schedule::ScheduleId;
use crate::core::verdict::{Action, GrantRef, Reason, Requester, Verdict};

impl Policy {
    /// The categories `group` blocks at `at`, and for each category allowed only in a
    /// schedule, whether we are outside it.
    fn blocked_now(&self, group: &Group, at: DateTime<Utc>) -> CategorySet {
        let mut blocked = group.block.union(self.illegal());
        for &(category, schedule) in &group.allow_during {
            if !self.schedule(schedule).contains(at) {
                blocked.insert(category);
            }
        }
        blocked
    }

    /// Decides one request. See the module documentation for the precedence.
    pub fn decide(
        &self,
        requester: &Requester<'_>,
        target: &Target,
        classification: &Classification,
        grants: &[Grant],
        at: DateTime<Utc>,
    ) -> Verdict {
        let categories = classification.categories;
        let group_id = requester.group;
        let group = self.group(group_id);
        let verdict = |action, reason| Verdict {
            action,
            reason,
            categories,
            group: group_id,
            grant: None,
        };

        // 1. Illegal content: nothing below can change this.
        if let Some(category) = self.most_severe(categories.intersection(self.illegal())) {
            return verdict(Action::Block, Reason::Illegal { category });
        }

        let grant_ref = |grant: &Grant| {
            Some(GrantRef {
                id: grant.id.clone(),
                ticket: grant.ticket.clone(),
            })
        };
        let applies = |grant: &Grant| {
            grant.active_at(at)
                && grant.covers_requester(group_id, requester.user, requester.client)
        };

        // 2. A teacher's lesson block: the sites it names, or any of its categories.
        for grant in grants {
            if grant.kind.is_lesson_block()
                && applies(grant)
                && (grant.covers_site(target)
                    || !grant.categories.intersection(categories).is_empty())
            {
                return Verdict {
                    grant: grant_ref(grant),
                    ..verdict(Action::Block, Reason::LessonBlock)
                };
            }
        }

        // 3. Grants: ticketed ones and lesson allows.
        let blocked_now = self.blocked_now(group, at);
        let blocked_here = categories.intersection(blocked_now);
        for grant in grants {
            if grant.kind.is_lesson_block() || !applies(grant) {
                continue;
            }
            let by_site = grant.covers_site(target);
            // A category grant lifts only the categories it names: a site that is also in
            // another blocked category stays blocked.
            let by_category = !grant.categories.intersection(categories).is_empty()
                && blocked_here.difference(grant.categories).is_empty();
            if by_site || by_category {
                let reason = match grant.kind {
                    GrantKind::Lesson(Effect::Allow) => Reason::LessonAllow,
                    _ => Reason::Grant,
                };
                return Verdict {
                    grant: grant_ref(grant),
                    ..verdict(Action::Allow, reason)
                };
            }
        }

        // 4. The group's own site lists, then IP literals.
        if let Some(entry) = group.block_sites.find(target) {
            return verdict(Action::Block, Reason::BlockedSite { entry });
        }
        if let Some(entry) = group.allow_sites.find(target) {
            return verdict(Action::Allow, Reason::AllowedSite { entry });
        }
        if group.block_ip_literals && target.host.is_ip() {
            return verdict(Action::Block, Reason::IpLiteral);
        }

        // 5. Categories blocked at this moment.
        if let Some(category) = self.most_severe(blocked_here) {
            let outside = group
                .allow_during
                .iter()
                .find(|(c, _)| *c == category)
                .map(|(_, s)| *s);
            return verdict(Action::Block, Reason::Category { category, outside });
        }

        // 6. The mode.
        match group.mode {
            Mode::Allowlist => match self.most_severe(categories.intersection(group.allow)) {
                Some(category) => verdict(Action::Allow, Reason::AllowedCategory { category }),
                None => match allowed_by_schedule(group, categories) {
                    Some((category, schedule)) => {
                        verdict(Action::Allow, Reason::AllowedDuring { category, schedule })
                    }
                    None => verdict(Action::Block, Reason::Mode(Mode::Allowlist)),
                },
            },
            Mode::Blocklist => match allowed_by_schedule(group, categories) {
                Some((category, schedule)) => {
                    verdict(Action::Allow, Reason::AllowedDuring { category, schedule })
                }
                None => verdict(Action::Allow, Reason::Mode(Mode::Blocklist)),
            },
        }
    }

    /// One line a technician can read: why this verdict.
    ///
    /// Built on every request for the decision log, so the common reasons are appended
    /// into one buffer rather than formatted.
    pub fn explain(&self, verdict: &Verdict) -> String {
        let group_def = self.group(verdict.group);
        let group = group_def.name.as_str();
        let mut out = String::with_capacity(96);
        let cat = |out: &mut String, c: CategoryId| {
            let c = self.category(c);
            out.push_str(&c.name);
            out.push_str(" (");
            out.push_str(c.severity.as_str());
            out.push(')');
        };
        match verdict.reason {
            Reason::Illegal { category } => {
                out.push_str("illegal category ");
                cat(&mut out, category);
                out.push_str(": blocked for every group, always");
            }
            Reason::Grant => match &verdict.grant {
                Some(g) => return format!("allowed by grant {} (ticket {})", g.id, g.ticket),
                None => out.push_str("allowed by a grant"),
            },
            Reason::LessonBlock => match &verdict.grant {
                Some(g) => {
                    return format!("blocked for this lesson by a teacher's override {}", g.id)
                }
                None => out.push_str("blocked for this lesson by a teacher's override"),
            },
            Reason::LessonAllow => match &verdict.grant {
                Some(g) => {
                    return format!("allowed for this lesson by a teacher's override {}", g.id)
                }
                None => out.push_str("allowed for this lesson by a teacher's override"),
            },
            Reason::BlockedSite { entry } => {
                let site = &group_def.block_sites.entries()[entry].text;
                return format!("group {group} blocks site {site:?} (block_sites)");
            }
            Reason::AllowedSite { entry } => {
                let site = &group_def.allow_sites.entries()[entry].text;
                return format!("group {group} allows site {site:?} (allow_sites)");
            }
            Reason::IpLiteral => {
                out.push_str("group ");
                out.push_str(group);
                out.push_str(" blocks IP-address hosts (block_ip_literals)");
            }
            Reason::Category { category, outside } => {
                out.push_str("category ");
                cat(&mut out, category);
                out.push_str(" is blocked for group ");
                out.push_str(group);
                if let Some(s) = outside {
                    out.push_str(" outside schedule ");
                    out.push_str(&self.schedule(s).name);
                }
            }
            Reason::AllowedDuring { category, schedule } => {
                out.push_str("category ");
                cat(&mut out, category);
                out.push_str(" is allowed for group ");
                out.push_str(group);
                out.push_str(" during schedule ");
                out.push_str(&self.schedule(schedule).name);
            }
            Reason::AllowedCategory { category } => {
                out.push_str("category ");
                cat(&mut out, category);
                out.push_str(" is allowed for group ");
                out.push_str(group);
                out.push_str(" (allowlist mode)");
            }
            Reason::Mode(Mode::Blocklist) => {
                out.push_str("no category blocked for group ");
                out.push_str(group);
                out.push_str(" matched");
            }
            Reason::Mode(Mode::Allowlist) => {
                out.push_str("group ");
                out.push_str(group);
                out.push_str(" is in allowlist mode and this site is not on its allow list");
            }
        }
        out
    }
}

/// A matched category that the group may reach inside one of its schedules (we are
/// inside it, or rule 4 would have blocked).
fn allowed_by_schedule(group: &Group, categories: CategorySet) -> Option<(CategoryId, ScheduleId)> {
    group
        .allow_during
        .iter()
        .find(|(c, _)| categories.contains(*c))
        .copied()
}
