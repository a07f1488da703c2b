//! Paging: OData query values and timestamps, decoding a page, and following
//! `@odata.nextLink` safely.

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use url::Url;

use super::request::{Fetched, decode_error};
use super::{ClientError, Page};

#[derive(Deserialize)]
struct PageWire {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

pub(super) fn decode_page(fetched: Fetched) -> Result<Page, ClientError> {
    let wire: PageWire = serde_json::from_slice(&fetched.body).map_err(decode_error)?;
    Ok(Page {
        items: wire.value,
        next_link: wire.next_link.filter(|link| !link.trim().is_empty()),
        request_id: fetched.request_id,
    })
}

/// An OData `DateTimeOffset` literal as the service writes them: UTC, 7 fraction digits, `Z`.
pub fn odata_timestamp(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("every utc date formats")
}

/// Percent-encodes a query value with `%20` for spaces (OData examples use `%20`, not `+`).
pub(super) fn encode_query_value(value: &str) -> String {
    // byte_serialize writes a space as `+` and a literal `+` as `%2B`, so this swap is exact.
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Where to GET an `@odata.nextLink`, or why not to.
pub(super) fn resolve_next_link(api: &Url, link: &str) -> Result<Url, ClientError> {
    let mut url = api
        .join(link.trim())
        .map_err(|error| ClientError::NextLink {
            reason: format!("is not a url: {error}"),
        })?;
    let api_host = api.host_str().unwrap_or_default();
    if !url
        .host_str()
        .is_some_and(|host| host.eq_ignore_ascii_case(api_host))
    {
        return Err(ClientError::NextLink {
            reason: format!(
                "points at host {} instead of {api_host}: not sending the token there",
                url.host_str().unwrap_or("(none)")
            ),
        });
    }
    if api.scheme() == "https" && url.scheme() == "http" {
        // The docs show http:// next links on the real host; never send the token in clear.
        url.set_scheme("https")
            .map_err(|()| ClientError::NextLink {
                reason: "cannot be upgraded to https".to_owned(),
            })?;
        url.set_port(api.port())
            .map_err(|()| ClientError::NextLink {
                reason: "cannot take the api port".to_owned(),
            })?;
    }
    if url.scheme() != api.scheme() || url.port_or_known_default() != api.port_or_known_default() {
        return Err(ClientError::NextLink {
            reason: format!(
                "uses {}://…:{} but the api is {}://…:{}",
                url.scheme(),
                url.port_or_known_default().unwrap_or(0),
                api.scheme(),
                api.port_or_known_default().unwrap_or(0)
            ),
        });
    }
    Ok(url)
}

/// `{collection}?$skiptoken=<the link's skiptoken>`, if the link has one.
pub(super) fn skiptoken_fallback(collection: &Url, link: &Url) -> Option<Url> {
    let token = link
        .query_pairs()
        .find(|(key, _)| key.eq_ignore_ascii_case("$skiptoken"))?
        .1;
    let mut url = collection.clone();
    url.set_query(Some(&format!("$skiptoken={}", encode_query_value(&token))));
    Some(url)
}
