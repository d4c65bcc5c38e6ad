//! One method of [`TestApp`] per endpoint, with the credentials that endpoint takes, so that a
//! test reads like the request it sends: `app.rest_link(&claims)`, `app.admin_get(path)`,
//! `app.v1_link(Some(&token))`. Each answers the status and the body read as JSON (`null` for an
//! empty body); [`TestApp::connector`] is in `helpers.rs`.

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::helpers::*;

impl TestApp {
    /// `GET /healthz`.
    pub async fn healthz(&self) -> (u16, Value) {
        answer(self.client.get(format!("{}/healthz", self.address))).await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> (u16, Value) {
        answer(self.client.get(format!("{}/readyz", self.address))).await
    }

    /// `POST /b2c/rest/precheck` with the connector's credentials.
    pub async fn rest_precheck(&self, claims: &Value) -> (u16, Value) {
        self.b2c("/b2c/rest/precheck", claims).await
    }

    /// `POST /b2c/rest/link` with the connector's credentials.
    pub async fn rest_link(&self, claims: &Value) -> (u16, Value) {
        self.b2c("/b2c/rest/link", claims).await
    }

    /// `POST /v1/link`, with the ID token as `Authorization: Bearer` when there is one.
    pub async fn v1_link(&self, id_token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.post(format!("{}/v1/link", self.address));
        if let Some(token) = id_token {
            request = request.bearer_auth(token);
        }
        answer(request).await
    }

    /// `GET /openapi.json` with the admin token.
    pub async fn openapi(&self) -> (u16, Value) {
        self.admin(Method::GET, "/openapi.json", None).await
    }

    /// `GET` an admin path (`/admin/v1/...`, query included) with the admin token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.admin(Method::GET, path, None).await
    }

    /// `POST` a JSON body to an admin path with the admin token.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin(Method::POST, path, Some(body)).await
    }

    /// `PATCH` a JSON body to an admin path with the admin token.
    pub async fn admin_patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.admin(Method::PATCH, path, Some(body)).await
    }

    /// Any method on any path, without credentials: what a stranger gets.
    pub async fn anonymous(&self, method: Method, path: &str) -> (u16, Value) {
        answer(
            self.client
                .request(method, format!("{}{path}", self.address)),
        )
        .await
    }

    async fn b2c(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self
            .client
            .post(format!("{}{path}", self.address))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(body);
        answer(request).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request).await
    }
}

/// Sends a request and reads its answer: the status, and the body as JSON (`null` when empty).
async fn answer(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, value)
}
