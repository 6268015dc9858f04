//! `lifelong-diffusion serve`: a small static file server for the web app in `www/` (native only).
//!
//! std's `TcpListener`, one thread per connection, `Connection: close`: the page loads a dozen
//! files once, then talks to nobody. Every response carries the Content-Security-Policy that
//! keeps the app on its own origin, and the MIME types browsers insist on (`application/wasm`
//! for streaming compilation, `text/javascript` for modules and workers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Nothing leaves the page's origin: scripts, workers, fetches, images and styles are same-origin
/// (images also from `blob:`/`data:` URLs the page makes itself); wasm may compile; no plugins,
/// no form posts, no `<base>` tricks.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; \
connect-src 'self'; img-src 'self' blob: data:; style-src 'self'; font-src 'none'; object-src 'none'; \
media-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'";

/// The command that builds `www/pkg`, named whenever it is missing.
pub const BUILD_COMMAND: &str = "bash scripts/build-web.sh";

/// Longest request head we read; anything longer is not a browser asking for a file.
const MAX_HEAD: usize = 16 * 1024;

/// MIME type by file extension.
pub fn mime_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A bound server for the folder `root`.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) to serve `root`.
    pub fn bind(root: &Path, addr: SocketAddr) -> Result<Server> {
        let root = root.canonicalize().map_err(|source| Error::Read { path: root.into(), source })?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::InvalidInput(format!("cannot listen on {addr}: {e}; pick another --port")))?;
        Ok(Server { listener, root })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// `Some(message)` when the wasm build is missing from the served folder.
    pub fn missing_build(&self) -> Option<String> {
        let js = self.root.join("pkg/lifelong_diffusion.js");
        (!js.is_file()).then(|| format!("{} is missing: build the web app with `{BUILD_COMMAND}`", self.root.join("pkg").display()))
    }

    /// Serves until the process ends.
    pub fn run(self) -> Result<()> {
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = self.root.clone();
            std::thread::spawn(move || {
                // A client that hangs up mid-response is its own business.
                let _ = handle(stream, &root);
            });
        }
        Ok(())
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// Lets the page's model cache revalidate (304) instead of downloading weights again.
    etag: Option<String>,
}

impl Response {
    fn text(status: &'static str, message: String) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: message.into_bytes(), etag: None }
    }
}

/// Size and modification time: changes whenever the file is rewritten (e.g. a retrained model).
fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
}

fn handle(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let head = match read_head(&mut reader) {
        Ok(head) => head,
        Err(message) => return write(stream, &Response::text("400 Bad Request", message), false),
    };
    let method = head.method;
    let response = match method.as_str() {
        "GET" | "HEAD" => respond(root, &head.target, head.if_none_match.as_deref()),
        _ => Response::text("405 Method Not Allowed", format!("{method} is not supported; this server only serves files")),
    };
    write(stream, &response, method == "HEAD")
}

struct Head {
    method: String,
    target: String,
    if_none_match: Option<String>,
}

/// Reads the request line and the headers we use.
fn read_head(reader: &mut impl BufRead) -> std::result::Result<Head, String> {
    let mut line = String::new();
    reader.by_ref().take(MAX_HEAD as u64).read_line(&mut line).map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("malformed request line".into());
    };
    let mut head = Head { method: method.to_string(), target: target.to_string(), if_none_match: None };
    let mut read = line.len();
    loop {
        let mut header = String::new();
        let n = reader.by_ref().take(MAX_HEAD as u64).read_line(&mut header).map_err(|e| e.to_string())?;
        read += n;
        if n == 0 || header == "\r\n" || header == "\n" {
            return Ok(head);
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("if-none-match") {
                head.if_none_match = Some(value.trim().to_string());
            }
        }
        if read > MAX_HEAD {
            return Err("request head too large".into());
        }
    }
}

/// The response for `target` under `root`.
fn respond(root: &Path, target: &str, if_none_match: Option<&str>) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let Some(relative) = safe_relative_path(path) else {
        return Response::text("403 Forbidden", format!("{path}: refused (paths must stay inside the served folder)"));
    };
    let mut file = root.join(&relative);
    if file.is_dir() {
        file = file.join("index.html");
    }
    // Symbolic links could still point outside: compare the resolved path with the root.
    let resolved = match file.canonicalize() {
        Ok(p) if p.starts_with(root) => p,
        Ok(_) => return Response::text("403 Forbidden", format!("{path}: refused (outside the served folder)")),
        Err(_) => return not_found(root, path),
    };
    let tag = std::fs::metadata(&resolved).map(|m| etag(&m)).ok();
    if tag.is_some() && tag.as_deref() == if_none_match {
        return Response { status: "304 Not Modified", content_type: mime_type(&resolved), body: Vec::new(), etag: tag };
    }
    match std::fs::read(&resolved) {
        Ok(body) => Response { status: "200 OK", content_type: mime_type(&resolved), body, etag: tag },
        Err(_) => not_found(root, path),
    }
}

fn not_found(root: &Path, path: &str) -> Response {
    let mut message = format!("{path}: not found");
    if path.starts_with("/pkg/") && !root.join("pkg").is_dir() {
        message = format!("{path}: not found; the web app is not built yet: run `{BUILD_COMMAND}`");
    }
    Response::text("404 Not Found", message)
}

/// Decodes `%XX` and checks every segment: no `..`, no absolute parts, no backslashes or NULs.
/// `None` means the path tries to leave the folder (or is not valid UTF-8).
pub fn safe_relative_path(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn write(mut stream: TcpStream, response: &Response, head_only: bool) -> std::io::Result<()> {
    let etag = response.etag.as_ref().map(|t| format!("ETag: {t}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{etag}Content-Security-Policy: {CSP}\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&response.body)?;
    }
    stream.flush()
}
