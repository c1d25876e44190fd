//! Pages of the lists that are not the task list (which pages in SQL):
//! brokers, consumers, nodes, apps, keys and event histories. They are small
//! and folded from events whole, so a page is cut in memory, in the order of
//! a stable key, and the cursor is that key of the last item.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::problem::Problem;

/// Base64url without padding; any text of the documented pattern decodes
/// (a cursor is only a place in an order, so none can be wrong).
const CURSOR: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Items per page when the request does not say.
const DEFAULT_LIMIT: i64 = 100;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to `api.max_page` (500 by default); 100 by default.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$", max_length = 1024)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The page of `items` after the query's cursor, ordered by `key`.
pub fn page<T>(mut items: Vec<T>, key: impl Fn(&T) -> String, query: &PageQuery, max: i64) -> Result<Page<T>, Problem> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT.min(max));
    if !(1..=max).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {max}"),
        ));
    }
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            CURSOR
                .decode(cursor)
                .ok()
                .filter(|_| cursor.len() <= 1024)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "invalid-query",
                        "cursor is not one this API returned; start again without it",
                    )
                })?,
        ),
    };
    items.sort_by_key(|item| key(item));
    if let Some(after) = &after {
        items.retain(|item| key(item) > *after);
    }
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|last| CURSOR.encode(key(last))))
        .flatten();
    Ok(Page { items, next_cursor })
}

/// A sort key for positions (numbers) that orders as text.
pub fn numeric_key(n: i64) -> String {
    format!("{n:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let items: Vec<i64> = (0..25).rev().collect();
        let mut query = PageQuery {
            limit: Some(10),
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = page(items.clone(), |n| numeric_key(*n), &query, 500).unwrap();
            seen.extend(page.items);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        let bad = PageQuery {
            limit: Some(0),
            cursor: None,
        };
        assert!(page(items.clone(), |n| numeric_key(*n), &bad, 500).is_err());
        let forged = PageQuery {
            limit: None,
            cursor: Some("%%%".into()),
        };
        assert!(page(items, |n| numeric_key(*n), &forged, 500).is_err());
    }
}
