//! The proxy auto-configuration script, served where browsers look for it: `/proxy.pac`
//! and `/wpad.dat` as origin-form requests on the proxy listener itself
//! (`http://gatehouse.school.internal:3128/proxy.pac`), and on the enrolment listener
//! (the plain-HTTP listener for devices, which WPAD's `http://wpad.<domain>/wpad.dat`
//! reaches when it listens on port 80). The script is written from the policy
//! ([`crate::core::pac`]) at start and at each reload, never per request.
//!
//! It is served to anyone on the network without sign-in, like every PAC file: a
//! browser fetches it before it knows a proxy, and it says nothing that is not already
//! on every device's settings page.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

/// The two paths browsers ask for a PAC file at.
pub fn is_pac_path(path: &str) -> bool {
    matches!(path, "/proxy.pac" | "/wpad.dat")
}

/// The answer to `method` on a PAC path, with the script in force.
pub fn respond(method: &Method, script: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"only GET and HEAD are served here\n",
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(script.as_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
    );
    // Browsers cache PAC files by their own rules; this lets a policy change reach them
    // at their next check rather than whenever an intermediate cache lets go.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}
