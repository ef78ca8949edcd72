//! `fingerprint`: can this node run tasks, and if not, why.

use super::Result;
use super::context::Ctx;
use super::output::{json, out};

pub fn fingerprint(ctx: &Ctx, as_json: bool) -> Result<u8> {
    let fp = ctx.driver().fingerprint();
    if as_json {
        out(&json(&fp)?)?;
    } else {
        out(&format!(
            "healthy: {}",
            if fp.healthy { "yes" } else { "no" }
        ))?;
        if let Some(reason) = &fp.reason {
            out(&format!("reason: {reason}"))?;
        }
        for (key, value) in &fp.attributes {
            out(&format!("{key} = {value}"))?;
        }
    }
    Ok(if fp.healthy { 0 } else { 1 })
}
