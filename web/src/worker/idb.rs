//! The worker's IndexedDB store: byte values by string key (the corpus
//! pass's index, `features.rs`). Models live in the Cache API (`fetch.rs`);
//! computed results live here.

use idb::{DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

const DB: &str = "scalpel";
const STORE: &str = "computed";
/// Bump to drop what older builds stored.
const VERSION: u32 = 1;

fn err(e: idb::Error) -> String {
    e.to_string()
}

async fn open() -> Result<idb::Database, String> {
    let factory = Factory::new().map_err(err)?;
    let mut req = factory.open(DB, Some(VERSION)).map_err(err)?;
    req.on_upgrade_needed(|event| {
        let Ok(db) = event.database() else { return };
        if db.store_names().iter().any(|s| s == STORE) {
            let _ = db.delete_object_store(STORE);
        }
        let _ = db.create_object_store(STORE, ObjectStoreParams::new());
    });
    req.await.map_err(err)
}

/// The bytes stored under `key`, if any.
pub async fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
    let db = open().await?;
    let tx = db.transaction(&[STORE], TransactionMode::ReadOnly).map_err(err)?;
    let store = tx.object_store(STORE).map_err(err)?;
    let value = store.get(JsValue::from_str(key)).map_err(err)?.await.map_err(err)?;
    db.close();
    Ok(match value {
        Some(v) if v.is_instance_of::<js_sys::ArrayBuffer>() || v.is_instance_of::<js_sys::Uint8Array>() => Some(js_sys::Uint8Array::new(&v).to_vec()),
        _ => None,
    })
}

/// Stores `bytes` under `key` (replacing what was there).
pub async fn put(key: &str, bytes: &[u8]) -> Result<(), String> {
    let db = open().await?;
    let tx = db.transaction(&[STORE], TransactionMode::ReadWrite).map_err(err)?;
    let store = tx.object_store(STORE).map_err(err)?;
    let value = js_sys::Uint8Array::from(bytes).buffer();
    store.put(&value, Some(&JsValue::from_str(key))).map_err(err)?.await.map_err(err)?;
    tx.commit().map_err(err)?.await.map_err(err)?;
    db.close();
    Ok(())
}
