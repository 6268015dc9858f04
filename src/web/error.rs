//! Typed errors of the browser edge. Each becomes a JS `Error` whose `name` is the variant's
//! [`WebError::js_name`] (the page switches on it) and whose message says what to do.

use wasm_bindgen::JsValue;

/// Everything the browser API can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("WebGPU is not available: {0}. Use a browser with WebGPU enabled (Chrome/Edge 113+, or Firefox/Safari with WebGPU turned on)")]
    NoWebGpu(String),

    #[error("the GPU device was lost ({0}); the page restarts the GPU worker on the next call")]
    DeviceLost(String),

    #[error("no model is loaded; load one first (the built-in model or a diffusers folder)")]
    NoModel,

    #[error("busy: {0}; wait for it to finish")]
    Busy(&'static str),

    #[error("invalid options: {0}")]
    InvalidOptions(String),

    #[error("model: {0}")]
    Model(#[from] crate::Error),

    #[error("storage quota exceeded while saving {0}; nothing was changed. Remove concepts you no longer need or free disk space, then try again")]
    Quota(String),

    #[error("concept store: {0}")]
    Store(String),
}

impl WebError {
    /// The JS error name: `NoWebGpuError`, `DeviceLostError`, `QuotaError`, ...
    pub fn js_name(&self) -> &'static str {
        match self {
            WebError::NoWebGpu(_) => "NoWebGpuError",
            WebError::DeviceLost(_) => "DeviceLostError",
            WebError::NoModel => "NoModelError",
            WebError::Busy(_) => "BusyError",
            WebError::InvalidOptions(_) => "InvalidOptionsError",
            WebError::Model(_) => "ModelError",
            WebError::Quota(_) => "QuotaError",
            WebError::Store(_) => "StoreError",
        }
    }
}

impl From<WebError> for JsValue {
    fn from(error: WebError) -> JsValue {
        let js = js_sys::Error::new(&error.to_string());
        js.set_name(error.js_name());
        js.into()
    }
}

/// A value JS threw while Rust read the page's arguments (a `Map` iterator, a getter).
impl From<JsValue> for WebError {
    fn from(value: JsValue) -> Self {
        WebError::InvalidOptions(js_message(&value))
    }
}

/// The message of a thrown JS value (an `Error`, a `DOMException` or anything else).
pub(crate) fn js_message(value: &JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(e) = value.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", e.name(), e.message());
    }
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", String::from(e.name()), String::from(e.message()));
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
