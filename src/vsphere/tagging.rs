//! vSphere tags (vCenter's tagging service, the `/rest/com/vmware/cis` REST API beside the SOAP
//! one): which objects carry a tag. A REST session is opened per call with the endpoint's
//! credentials and closed afterwards; tags are named `CATEGORY:TAG` or just `TAG`.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::types::ManagedObjectReference;

const SESSION_HEADER: &str = "vmware-api-session-id";

/// A tag as written in configurations: `category:tag`, or `tag` in any category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagName {
    /// The category, when given.
    pub category: Option<String>,
    /// The tag's name.
    pub name: String,
}

impl TagName {
    /// Parses `category:tag` or `tag`.
    pub fn parse(text: &str) -> Self {
        match text.split_once(':') {
            Some((c, t)) if !c.is_empty() => Self {
                category: Some(c.to_string()),
                name: t.to_string(),
            },
            _ => Self {
                category: None,
                name: text.to_string(),
            },
        }
    }
}

#[derive(Deserialize)]
struct Wrapped<T> {
    value: T,
}

#[derive(Deserialize)]
struct TagInfo {
    id: String,
    name: String,
    category_id: String,
}

#[derive(Deserialize)]
struct CategoryInfo {
    name: String,
}

#[derive(Deserialize)]
struct ObjectId {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Attached {
    object_ids: Option<Vec<ObjectId>>,
}

/// A REST session of the tagging service.
struct Rest<'a> {
    client: &'a Client,
    base: url::Url,
    session: String,
}

impl Rest<'_> {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let mut url = self.base.clone();
        url.set_path(&format!("/rest{}", path.split('?').next().unwrap_or(path)));
        if let Some((_, q)) = path.split_once('?') {
            url.set_query(Some(q));
        }
        let http = self.client.transport().http();
        let mut req = http
            .request(method, url.clone())
            .timeout(self.client.transport().timeout())
            .header(SESSION_HEADER, &self.session);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.client.transport().error(e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.client.transport().error(e))?;
        if !status.is_success() {
            let kind = match status.as_u16() {
                401 => ErrorKind::Auth,
                403 => ErrorKind::Permission,
                404 => ErrorKind::NotFound,
                _ => ErrorKind::Fault,
            };
            return Err(Error::new(
                kind,
                format!("the tagging service answered HTTP {status} to {path}"),
            ));
        }
        serde_json::from_str::<Wrapped<T>>(&text)
            .map(|w| w.value)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Decode,
                    format!("the tagging service's answer to {path} is not understood: {e}"),
                )
            })
    }
}

impl Client {
    async fn rest_session(&self) -> Result<Rest<'_>> {
        let mut base = self.url().clone();
        base.set_query(None);
        let mut login = base.clone();
        login.set_path("/rest/com/vmware/cis/session");
        let resp = self
            .transport()
            .http()
            .post(login)
            .timeout(self.transport().timeout())
            .basic_auth(self.user_name(), Some(self.password_text()))
            .send()
            .await
            .map_err(|e| self.transport().error(e))?;
        match resp.status().as_u16() {
            200 | 201 => {}
            401 | 403 => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    "the tagging service refused the endpoint's credentials",
                ))
            }
            404 => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "this endpoint has no tagging service (tags need vCenter)",
                ))
            }
            s => {
                return Err(Error::new(
                    ErrorKind::Fault,
                    format!("the tagging service login answered HTTP {s}"),
                ))
            }
        }
        let text = resp.text().await.map_err(|e| self.transport().error(e))?;
        let session = serde_json::from_str::<Wrapped<String>>(&text)
            .map_err(|e| Error::new(ErrorKind::Decode, format!("tagging session: {e}")))?
            .value;
        Ok(Rest {
            client: self,
            base,
            session,
        })
    }

    /// The objects that carry any of `tags` (`category:tag` or `tag`). A tag that does not
    /// exist is an error naming it and the tags that do.
    pub async fn objects_with_tags(&self, tags: &[String]) -> Result<Vec<ManagedObjectReference>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let rest = self.rest_session().await?;
        let result = async {
            let ids: Vec<String> = rest
                .call(Method::GET, "/com/vmware/cis/tagging/tag", None)
                .await?;
            let mut all = Vec::new();
            // Categories by id: tags share few categories, each is read once.
            let mut categories: std::collections::BTreeMap<String, String> = Default::default();
            for id in ids {
                let t: TagInfo = rest
                    .call(
                        Method::GET,
                        &format!("/com/vmware/cis/tagging/tag/id:{id}"),
                        None,
                    )
                    .await?;
                if !categories.contains_key(&t.category_id) {
                    let c: CategoryInfo = rest
                        .call(
                            Method::GET,
                            &format!("/com/vmware/cis/tagging/category/id:{}", t.category_id),
                            None,
                        )
                        .await?;
                    categories.insert(t.category_id.clone(), c.name);
                }
                let category = categories[&t.category_id].clone();
                all.push((t.id, category, t.name));
            }
            let mut wanted = Vec::new();
            for text in tags {
                let want = TagName::parse(text);
                let found: Vec<&String> = all
                    .iter()
                    .filter(|(_, c, n)| {
                        *n == want.name && want.category.as_ref().is_none_or(|wc| wc == c)
                    })
                    .map(|(id, ..)| id)
                    .collect();
                if found.is_empty() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "no tag {text:?}; tags: {}",
                            all.iter()
                                .map(|(_, c, n)| format!("{c}:{n}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                wanted.extend(found.into_iter().cloned());
            }
            let attached: Vec<Attached> = rest
                .call(
                    Method::POST,
                    "/com/vmware/cis/tagging/tag-association?~action=list-attached-objects-on-tags",
                    Some(json!({ "tag_ids": wanted })),
                )
                .await?;
            let mut objects: Vec<ManagedObjectReference> = attached
                .into_iter()
                .flat_map(|a| a.object_ids.unwrap_or_default())
                .map(|o| ManagedObjectReference::new(&o.kind, &o.id))
                .collect();
            objects.sort_by(|a, b| a.value.cmp(&b.value));
            objects.dedup();
            Ok(objects)
        }
        .await;
        let _ = rest
            .call::<serde_json::Value>(Method::DELETE, "/com/vmware/cis/session", None)
            .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names() {
        assert_eq!(
            TagName::parse("backup:nightly"),
            TagName {
                category: Some("backup".into()),
                name: "nightly".into()
            }
        );
        assert_eq!(TagName::parse("nightly").category, None);
    }
}
