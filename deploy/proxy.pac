// Proxy auto-configuration for Gatehouse. Serve it as http://wpad.<your-domain>/wpad.dat
// (WPAD) or set it as the browser's automatic configuration URL, with the MIME type
// application/x-ns-proxy-autoconfig. Replace gatehouse.school.internal with your node
// (or the load balancer in front of several nodes).
function FindProxyForURL(url, host) {
    // The school's own servers and loopback go direct.
    if (isPlainHostName(host) ||
        dnsDomainIs(host, ".school.internal") ||
        host === "localhost" || host === "127.0.0.1" || host === "::1") {
        return "DIRECT";
    }
    // Everything else goes through Gatehouse. There is no DIRECT fallback on purpose:
    // if the filter is down, pupils must not be sent to the open internet.
    return "PROXY gatehouse.school.internal:3128";
}
