//! Renderers: the same [`Report`](crate::report::Report) as HTML, CSV or Markdown, one
//! format per module, each an `impl Report` method (`--format json` is the model's own
//! `Serialize`). They only lay out what the model holds; no figure is computed here.

mod csv;
mod html;
mod markdown;

/// A figure beside the week before's, in words (`+12% on the week before (40)`).
fn trend(now: u64, before: u64) -> String {
    if before == 0 {
        return if now == 0 {
            "none the week before either".into()
        } else {
            "none the week before".into()
        };
    }
    let change = (now as f64 - before as f64) / before as f64 * 100.0;
    format!("{change:+.0}% on the week before ({before})")
}
