//! `serve`: MIME types, the CSP header, 404s, path traversal refused, the missing-build hint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use lifelong_diffusion::serve::{safe_relative_path, Server, BUILD_COMMAND, CSP};

/// A served folder `root/www` (with `root/secret.txt` beside it, outside) and its address.
fn start(with_pkg: bool) -> (SocketAddr, PathBuf) {
    let root = std::env::temp_dir().join(format!("ld-serve-{}-{}", std::process::id(), with_pkg));
    let www = root.join("www");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    std::fs::write(www.join("app.js"), "export {}").unwrap();
    std::fs::write(www.join("sub/index.html"), "sub").unwrap();
    std::fs::write(root.join("secret.txt"), "secret").unwrap();
    if with_pkg {
        std::fs::create_dir_all(www.join("pkg")).unwrap();
        std::fs::write(www.join("pkg/lifelong_diffusion.js"), "export default 1").unwrap();
        std::fs::write(www.join("pkg/lifelong_diffusion_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    }
    let server = Server::bind(&www, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || server.run());
    (addr, root)
}

/// Sends a raw request; returns (status line, headers lowercased, body).
fn get(addr: SocketAddr, request_line: &str) -> (String, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "{request_line}\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[test]
fn serves_files_with_mime_types_and_csp() {
    let (addr, _root) = start(true);
    for (path, mime) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/pkg/lifelong_diffusion_bg.wasm", "application/wasm"),
        ("/sub/", "text/html; charset=utf-8"),
        ("/app.js?v=2", "text/javascript; charset=utf-8"),
    ] {
        let (status, headers, _) = get(addr, &format!("GET {path} HTTP/1.1"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert_eq!(header(&headers, "content-type"), Some(mime), "{path}");
        assert_eq!(header(&headers, "content-security-policy"), Some(CSP.to_ascii_lowercase().as_str()), "{path}");
    }
    let (_, _, body) = get(addr, "GET /pkg/lifelong_diffusion_bg.wasm HTTP/1.1");
    assert_eq!(body, b"\0asm\x01\0\0\0");
    let (_, headers, body) = get(addr, "HEAD /app.js HTTP/1.1");
    assert_eq!(header(&headers, "content-length"), Some("9"));
    assert!(body.is_empty());
}

#[test]
fn csp_allows_nothing_off_origin() {
    for directive in CSP.split(';') {
        for source in directive.split_whitespace().skip(1) {
            assert!(
                ["'self'", "'none'", "'wasm-unsafe-eval'", "blob:", "data:"].contains(&source),
                "{directive}: {source} would allow another origin"
            );
        }
    }
    assert!(CSP.contains("connect-src 'self'") && CSP.contains("default-src 'self'"));
}

#[test]
fn missing_files_are_404_and_the_missing_build_names_the_command() {
    let (addr, _root) = start(false);
    let (status, _, body) = get(addr, "GET /nope.js HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(String::from_utf8_lossy(&body).contains("not found"));
    let (status, _, body) = get(addr, "GET /pkg/lifelong_diffusion.js HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(String::from_utf8_lossy(&body).contains(BUILD_COMMAND), "{}", String::from_utf8_lossy(&body));
    let server = Server::bind(&std::env::temp_dir(), "127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(server.missing_build().unwrap().contains(BUILD_COMMAND));
}

#[test]
fn path_traversal_is_refused() {
    let (addr, _root) = start(true);
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "/..%2fsecret.txt", "/..%5csecret.txt", "/%00"] {
        let (status, _, body) = get(addr, &format!("GET {path} HTTP/1.1"));
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("secret\n") && body != b"secret", "{path}");
    }
    assert_eq!(safe_relative_path("/a/./b.js"), Some(PathBuf::from("a/b.js")));
    assert_eq!(safe_relative_path("/a/%ZZ"), None);
}

#[test]
fn other_methods_and_garbage_are_refused() {
    let (addr, _root) = start(true);
    assert_eq!(get(addr, "POST / HTTP/1.1").0, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(get(addr, "GARBAGE").0, "HTTP/1.1 400 Bad Request");
}

#[test]
fn etags_let_the_model_cache_revalidate() {
    let (addr, _root) = start(true);
    let (_, headers, _) = get(addr, "GET /app.js HTTP/1.1");
    let tag = header(&headers, "etag").expect("an ETag").to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /app.js HTTP/1.1\r\nIf-None-Match: {tag}\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 304 Not Modified"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "a 304 has no body");
}
