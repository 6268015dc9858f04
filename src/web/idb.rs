//! IndexedDB's event-based requests as futures (web-sys only, no wrapper crate).
//!
//! Rule for callers: issue every request of a transaction before the first `await` on any of
//! them. A transaction commits once it has no pending requests at the end of a task, so a
//! request issued after an await may find it already committed (`TransactionInactiveError`).

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DomException, IdbDatabase, IdbFactory, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbVersionChangeEvent};

use super::error::{js_message, WebError};

/// A DOMException (or other thrown value) from IndexedDB -> a typed error; `what` names the data.
pub fn store_error(value: &JsValue, what: &str) -> WebError {
    match value.dyn_ref::<DomException>().map(DomException::name).as_deref() {
        Some("QuotaExceededError") => WebError::Quota(what.to_string()),
        _ => WebError::Store(format!("{what}: {}", js_message(value))),
    }
}

/// `indexedDB` of this global scope (window or worker).
fn factory() -> Result<IdbFactory, WebError> {
    js_sys::Reflect::get(&js_sys::global(), &"indexedDB".into())
        .ok()
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
        .ok_or_else(|| WebError::Store("IndexedDB is not available here (private browsing may disable it)".into()))
}

/// Sets `on_ok` / `on_err` handlers that settle a promise; `ok` and `err` make the values.
fn settle<T: JsCast + Clone + 'static>(
    target: &T,
    set: impl Fn(&T, &Function, &Function),
    ok: fn(&T) -> JsValue,
    err: fn(&T) -> JsValue,
) -> JsFuture {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        let (a, b) = (target.clone(), target.clone());
        let on_ok = Closure::once_into_js(move |_: JsValue| {
            let _ = resolve.call1(&JsValue::NULL, &ok(&a));
        });
        let on_err = Closure::once_into_js(move |_: JsValue| {
            let _ = reject.call1(&JsValue::NULL, &err(&b));
        });
        set(target, on_ok.unchecked_ref(), on_err.unchecked_ref());
    });
    JsFuture::from(promise)
}

/// Resolves to the request's result, or rejects with its error.
pub async fn request(req: IdbRequest, what: &str) -> Result<JsValue, WebError> {
    let fut = settle(
        &req,
        |r, ok, err| {
            r.set_onsuccess(Some(ok));
            r.set_onerror(Some(err));
        },
        |r| r.result().unwrap_or(JsValue::UNDEFINED),
        |r| r.error().ok().flatten().map(JsValue::from).unwrap_or(JsValue::UNDEFINED),
    );
    fut.await.map_err(|e| store_error(&e, what))
}

/// Resolves when the transaction commits; rejects when it aborts (quota, an error, the page
/// going away), in which case none of its writes happened.
pub async fn committed(tx: IdbTransaction, what: &str) -> Result<(), WebError> {
    let fut = settle(
        &tx,
        |t, ok, err| {
            t.set_oncomplete(Some(ok));
            t.set_onerror(Some(err));
            t.set_onabort(Some(err));
        },
        |_| JsValue::UNDEFINED,
        |t| t.error().map(JsValue::from).unwrap_or_else(|| JsValue::from_str("the transaction was aborted")),
    );
    fut.await.map(|_| ()).map_err(|e| store_error(&e, what))
}

/// Opens database `name` at `version`; `upgrade(db, old_version)` creates or migrates stores.
pub async fn open(name: &str, version: u32, upgrade: fn(&IdbDatabase, u32) -> Result<(), JsValue>) -> Result<IdbDatabase, WebError> {
    let req: IdbOpenDbRequest = factory()?.open_with_u32(name, version).map_err(|e| store_error(&e, name))?;
    let on_upgrade = Closure::once_into_js(move |event: IdbVersionChangeEvent| {
        let Some(req) = event.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()) else { return };
        let Ok(db) = req.result().and_then(|d| d.dyn_into::<IdbDatabase>().map_err(JsValue::from)) else { return };
        if let Err(e) = upgrade(&db, event.old_version() as u32) {
            // Failing the upgrade aborts it; open() then rejects with this error.
            web_sys::console::error_1(&e);
            if let Some(tx) = req.transaction() {
                let _ = tx.abort();
            }
        }
    });
    req.set_onupgradeneeded(Some(on_upgrade.unchecked_ref()));
    let blocked = Closure::<dyn Fn()>::new(|| web_sys::console::warn_1(&"concept store upgrade blocked by another tab".into()));
    req.set_onblocked(Some(blocked.as_ref().unchecked_ref()));
    let result = request(req.clone().unchecked_into(), name).await;
    req.set_onblocked(None);
    drop(blocked);
    let db = result?.dyn_into::<IdbDatabase>().map_err(|_| WebError::Store(format!("{name}: open did not return a database")))?;
    Ok(db)
}
