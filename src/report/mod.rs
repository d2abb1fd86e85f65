//! The weekly safeguarding report: what the Designated Safeguarding Lead reads on Monday
//! morning, built from one or more nodes' decision logs.
//!
//! One pass over the entries of the period (and the week before, for the trend) feeds
//! aggregates whose size depends on the number of distinct users, hosts and categories,
//! never on the number of records. Nothing about an `illegal` category is kept beyond
//! its host: such URLs are never printed in full, in any format.
//!
//! | module | job |
//! | --- | --- |
//! | `period` | the period a report covers; ISO weeks in the school's time zone |
//! | `aggregate` | the one-pass [`Builder`] and what it keeps per person, group and host |
//! | `model` | the [`Report`] and its rows: what the report says |
//! | `render` | the report as HTML, CSV and Markdown (JSON is the model's `Serialize`) |

mod aggregate;
mod model;
mod period;
mod render;

pub use aggregate::Builder;
pub use model::{
    devices_text, Alert, BypassRow, Count, DayRow, GrantRow, GrantTerms, GroupRow, Integrity,
    PersonRow, Report, SafeSearchRow, SearchRow, Totals, DEVICES_PER_PERSON,
};
pub use period::{iso_week, IsoWeekError, Period};
