//! The pages a pupil or member of staff sees: the block page and honest error pages.
//!
//! Self-contained HTML (inline CSS, no scripts, no fetches), readable on a phone and a
//! classroom PC, in plain words a child understands, with the reference number that finds
//! the decision in the log and what to do next.

/// What the block page says.
pub struct BlockInfo<'a> {
    /// School or trust name.
    pub school: &'a str,
    /// The address asked for (host, or host and path).
    pub site: &'a str,
    /// Category shown, if any ("gambling").
    pub category: Option<&'a str>,
    /// Why, in one line for the technician.
    pub explanation: &'a str,
    /// Group the decision was made for.
    pub group: &'a str,
    /// When, already formatted in the school's time zone.
    pub time: &'a str,
    /// The reference number.
    pub reference: &'a str,
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;background:#f3f5f8;color:#1d2733}\
main{max-width:40rem;margin:3rem auto;background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);overflow:hidden}\
header{background:#23507a;color:#fff;padding:1.25rem 1.75rem}header p{margin:.2rem 0 0;opacity:.85}\
h1{margin:0;font-size:1.5rem}section{padding:1.5rem 1.75rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:1rem 0}dt{font-weight:600;color:#4a5868}dd{margin:0;word-break:break-all}\
.ref{font-family:ui-monospace,Consolas,monospace;font-size:1.1rem;background:#eef3f8;padding:.1rem .4rem;border-radius:4px}\
.next{background:#fff7e0;border-left:4px solid #e0a800;padding:.75rem 1rem;border-radius:4px}\
footer{padding:0 1.75rem 1.5rem;color:#6b7785;font-size:.85rem}";

fn page(title: &str, school: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><main>\
<header><h1>{title}</h1><p>{school}</p></header>{body}</main></body></html>\n",
        title = escape(title),
        school = escape(school),
    )
}

/// The block page for a refused request.
pub fn block_page(info: &BlockInfo<'_>) -> String {
    let category = info
        .category
        .map(|c| format!("<dt>Category</dt><dd>{}</dd>", escape(c)))
        .unwrap_or_default();
    let body = format!(
        "<section><p>This page has been blocked by the school's web filter.</p>\
<dl><dt>Site</dt><dd>{site}</dd>{category}<dt>Filtering for</dt><dd>{group}</dd>\
<dt>Time</dt><dd>{time}</dd><dt>Reference</dt><dd><span class=\"ref\">{reference}</span></dd></dl>\
<p class=\"next\"><strong>Need this page for your work?</strong> Ask a member of staff to raise a \
helpdesk ticket quoting reference <span class=\"ref\">{reference}</span>. A technician can check \
the site and unblock it for your class if it is suitable.</p></section>\
<footer>Why: {explanation}. Internet use in school is filtered and logged to keep everyone safe.</footer>",
        site = escape(info.site),
        group = escape(info.group),
        time = escape(info.time),
        reference = escape(info.reference),
        explanation = escape(info.explanation),
    );
    page("This page is blocked", info.school, &body)
}

/// The same words as plain text, for refusals that cannot carry HTML well (CONNECT).
pub fn block_text(info: &BlockInfo<'_>) -> String {
    format!(
        "Blocked by the {school} web filter.\nSite: {site}\n{category}Filtering for: {group}\nTime: {time}\nReference: {reference}\n\
Ask a member of staff to raise a helpdesk ticket quoting reference {reference}.\nWhy: {explanation}\n",
        school = info.school,
        site = info.site,
        category = info.category.map(|c| format!("Category: {c}\n")).unwrap_or_default(),
        group = info.group,
        time = info.time,
        reference = info.reference,
        explanation = info.explanation,
    )
}

/// An error page: the site could not be reached, and why, honestly.
pub fn error_page(school: &str, title: &str, site: &str, detail: &str) -> String {
    let body = format!(
        "<section><p>{detail}</p><dl><dt>Site</dt><dd>{site}</dd></dl>\
<p>This is not the web filter blocking the page. Try again in a moment; if it keeps happening, \
tell a member of staff.</p></section>",
        detail = escape(detail),
        site = escape(site),
    );
    page(title, school, &body)
}

/// The page sent with `407` when the proxy needs a sign-in.
pub fn auth_page(school: &str) -> String {
    page(
        "Please sign in",
        school,
        "<section><p>This network needs you to sign in before you can use the internet. \
Use your school username and password when your browser asks.</p></section>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_page_escapes_and_names_everything() {
        let info = BlockInfo {
            school: "St <Mary>'s",
            site: "evil.example/<script>",
            category: Some("gambling"),
            explanation: "category gambling is blocked for group ks2",
            group: "ks2",
            time: "Mon 23 Nov 2026 10:35",
            reference: "1234-ABCD",
        };
        let html = block_page(&info);
        assert!(html.contains("St &lt;Mary&gt;&#39;s"));
        assert!(html.contains("evil.example/&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        for needle in [
            "gambling",
            "ks2",
            "Mon 23 Nov 2026 10:35",
            "1234-ABCD",
            "helpdesk ticket",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
        let text = block_text(&info);
        assert!(text.contains("Reference: 1234-ABCD") && text.contains("Category: gambling"));
    }
}
