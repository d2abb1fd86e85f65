//! Categories, their severities and sets of them.
//!
//! A category is a named list (`pornography`, `gambling`, `social-media`). Policy gives
//! each one a severity; severity drives decision precedence (an `illegal` category blocks
//! for everyone), the order of the safeguarding report and which attempts raise alerts.
//! Inside the core a category is a small index ([`CategoryId`]) and a set of them is a
//! bitset ([`CategorySet`]), so classifying a request allocates nothing.
//!
//! Pure: no I/O, no clock.

use std::fmt;

/// How serious a category is. Ordered from least to most severe, so `max()` picks the
/// category a verdict should name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Time-wasting or bandwidth-heavy: games, social media, video, shopping.
    Productivity,
    /// Not suitable in school: gambling, drugs, dating, malware, circumvention.
    Inappropriate,
    /// A safeguarding concern the DSL must see: pornography, self-harm, extremism.
    Safeguarding,
    /// Unlawful content (IWF, CTIRU lists): blocked for every group, always.
    Illegal,
}

impl Severity {
    /// The lowercase name used in policy files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Productivity => "productivity",
            Severity::Inappropriate => "inappropriate",
            Severity::Safeguarding => "safeguarding",
            Severity::Illegal => "illegal",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most categories one policy may define: a [`CategorySet`] is one `u64`, which is
/// also the value type of the compiled domain index.
pub const MAX_CATEGORIES: usize = 64;

/// A category's index in its policy's category table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CategoryId(u8);

impl CategoryId {
    /// The id of the `index`th category; `None` past [`MAX_CATEGORIES`].
    pub fn new(index: usize) -> Option<CategoryId> {
        (index < MAX_CATEGORIES).then_some(CategoryId(index as u8))
    }

    /// Index into the policy's category table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of categories, as a bitset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CategorySet(u64);

impl CategorySet {
    /// The empty set.
    pub const EMPTY: CategorySet = CategorySet(0);

    /// A set from raw bits (as stored in compiled lists).
    pub const fn from_bits(bits: u64) -> CategorySet {
        CategorySet(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The set holding only `id`.
    pub fn single(id: CategoryId) -> CategorySet {
        CategorySet(1 << id.0)
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: CategoryId) {
        self.0 |= 1 << id.0;
    }

    /// Whether `id` is in the set.
    pub fn contains(self, id: CategoryId) -> bool {
        self.0 & (1 << id.0) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of categories in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Categories in both sets.
    pub fn intersection(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & other.0)
    }

    /// Categories in either set.
    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }

    /// Categories in `self` but not in `other`.
    pub fn difference(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & !other.0)
    }

    /// The ids in the set, lowest index first.
    pub fn iter(self) -> impl Iterator<Item = CategoryId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            Some(CategoryId(i as u8))
        })
    }
}

impl FromIterator<CategoryId> for CategorySet {
    fn from_iter<I: IntoIterator<Item = CategoryId>>(iter: I) -> Self {
        let mut set = CategorySet::EMPTY;
        for id in iter {
            set.insert(id);
        }
        set
    }
}

/// One category as the policy defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// Its name, as in policy and in `blocklists/<name>/`.
    pub name: String,
    /// How serious it is.
    pub severity: Severity,
    /// What belongs in it, for `gatehouse check` and the report.
    pub description: String,
    /// What the block page says about it, in the words of the list's provider (an
    /// `illegal` category always has one: see [`ILLEGAL_BLOCK_MESSAGE`]).
    pub block_message: Option<String>,
    /// Whether, and how, an attempt on it reaches the DSL.
    pub alert: AlertMode,
    /// As `alert`, for a match of its search terms.
    pub term_alert: AlertMode,
    /// Alert on allowed visits too (a group allowed it; the DSL still wants to know).
    pub alert_on_allow: bool,
    /// A teacher's lesson override may not name it, nor open a site in it (`locked =
    /// true` in policy; every `illegal` category is locked whatever it says).
    pub locked: bool,
}

/// How an attempt on a category reaches the Designated Safeguarding Lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertMode {
    /// An alert now (email and/or webhook), collapsed per person and category.
    Immediate,
    /// A line in the hourly or daily digest email.
    Digest,
    /// No alert; the weekly report still shows it.
    None,
}

impl AlertMode {
    /// The default for a severity: `immediate` for `illegal` and `safeguarding`, since
    /// those are the attempts KCSIE expects a DSL to hear about the same day (a pupil
    /// searching for self-harm methods on Tuesday cannot wait for Monday's report);
    /// `none` otherwise, since an alert for every blocked game would bury the ones that
    /// matter — those stay in the weekly report.
    pub fn default_for(severity: Severity) -> AlertMode {
        match severity {
            Severity::Illegal | Severity::Safeguarding => AlertMode::Immediate,
            Severity::Inappropriate | Severity::Productivity => AlertMode::None,
        }
    }

    /// The mode a policy file names.
    pub fn parse(text: &str) -> Option<AlertMode> {
        match text {
            "immediate" => Some(AlertMode::Immediate),
            "digest" => Some(AlertMode::Digest),
            "none" => Some(AlertMode::None),
            _ => None,
        }
    }

    /// `immediate`, `digest` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMode::Immediate => "immediate",
            AlertMode::Digest => "digest",
            AlertMode::None => "none",
        }
    }
}

/// What the block page says for an `illegal` category whose policy gives no
/// `block_message` of its own: why the page is refused, that nobody can lift it, and
/// that the refusal is not a judgement on the pupil. A school that takes the IWF list
/// sets the IWF's agreed splash text as the category's `block_message`.
pub const ILLEGAL_BLOCK_MESSAGE: &str = "Access to this page has been refused because it is \
on a list of illegal content kept by a national body. The block applies to everyone, \
everywhere, and cannot be lifted by the school.";

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> CategoryId {
        CategoryId::new(i).expect("test index is below MAX_CATEGORIES")
    }

    #[test]
    fn set_operations() {
        let a: CategorySet = [id(0), id(5), id(63)].into_iter().collect();
        let b: CategorySet = [id(5), id(7)].into_iter().collect();
        assert_eq!(a.len(), 3);
        assert!(a.contains(id(63)));
        assert!(!a.contains(id(7)));
        assert_eq!(a.intersection(b).iter().collect::<Vec<_>>(), vec![id(5)]);
        assert_eq!(
            a.difference(b).iter().collect::<Vec<_>>(),
            vec![id(0), id(63)]
        );
        assert_eq!(a.union(b).len(), 4);
        assert!(CategorySet::EMPTY.is_empty());
        assert_eq!(CategoryId::new(64), None);
    }

    #[test]
    fn severity_orders_illegal_highest() {
        let mut all = [
            Severity::Illegal,
            Severity::Productivity,
            Severity::Safeguarding,
            Severity::Inappropriate,
        ];
        all.sort();
        assert_eq!(
            all,
            [
                Severity::Productivity,
                Severity::Inappropriate,
                Severity::Safeguarding,
                Severity::Illegal
            ]
        );
    }
}
