//! Routes declare the access they need where they are registered: [`Routes`] adds a route to
//! the router and its [`Rule`] to the listener's [`Rules`] in one call, so the two cannot
//! drift apart. The guard looks the matched route up; a route registered without a rule
//! (with axum's own `route`, say) is not found there and needs `admin`: closed by default.

use std::collections::HashMap;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodFilter;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::UtoipaMethodRouter;

use super::Need;

/// What a route declares it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// Always this.
    Is(Need),
    /// Reading: one mailbox when the query names one (`true` from the function), else all
    /// mail.
    ReadsMailboxIf(fn(Option<&str>) -> bool),
}

impl From<Need> for Rule {
    fn from(n: Need) -> Rule {
        Rule::Is(n)
    }
}

impl Rule {
    fn need(self, query: Option<&str>) -> Need {
        match self {
            Rule::Is(n) => n,
            Rule::ReadsMailboxIf(one) if one(query) => Need::MailboxRead,
            Rule::ReadsMailboxIf(_) => Need::AllRead,
        }
    }
}

/// The declared rule of each (method, path template) of one listener.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rules(HashMap<(Method, String), Rule>);

impl Rules {
    fn add(&mut self, method: Method, path: &str, rule: Rule) {
        let previous = self.0.insert((method.clone(), path.to_string()), rule);
        assert!(
            previous.is_none(),
            "{method} {path} is registered with two rules"
        );
    }

    /// Adds every rule of `other`.
    pub(crate) fn merge(&mut self, other: Rules) {
        for ((m, p), r) in other.0 {
            self.add(m, &p, r);
        }
    }

    /// What a request to `template` needs; `admin` when the route declared nothing.
    pub(crate) fn need(&self, method: &Method, template: &str, query: Option<&str>) -> Need {
        // axum answers HEAD with the GET handler.
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        self.0
            .get(&(method, template.to_string()))
            .map_or(Need::Admin, |r| r.need(query))
    }
}

/// A router under construction, with the rule of every route it gets, and (only when asked
/// for: [`Routes::documented`]) the OpenAPI document of its routes.
///
/// The routes served are registered without their document: the document (a few thousand
/// small allocations) would otherwise stay resident for the life of the process, in an
/// idle server too. The docs endpoints build it again when it is asked for (`api::doc`).
pub(crate) struct Routes<S> {
    router: axum::Router<S>,
    doc: Option<OpenApi>,
    rules: Rules,
}

fn methods(item: &utoipa::openapi::PathItem) -> Vec<Method> {
    [
        (item.get.is_some(), Method::GET),
        (item.put.is_some(), Method::PUT),
        (item.post.is_some(), Method::POST),
        (item.delete.is_some(), Method::DELETE),
        (item.patch.is_some(), Method::PATCH),
        (item.head.is_some(), Method::HEAD),
        (item.options.is_some(), Method::OPTIONS),
    ]
    .into_iter()
    .filter_map(|(has, m)| has.then_some(m))
    .collect()
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No route yet; no document is kept.
    pub(crate) fn new() -> Self {
        Routes {
            router: axum::Router::new(),
            doc: None,
            rules: Rules::default(),
        }
    }

    /// No route yet; documented routes go into `doc`.
    pub(crate) fn documented(doc: OpenApi) -> Self {
        Routes {
            doc: Some(doc),
            ..Routes::new()
        }
    }

    /// A documented route (utoipa's `routes!`): each of its methods needs `rule`.
    pub(crate) fn api(mut self, rule: impl Into<Rule>, r: UtoipaMethodRouter<S>) -> Self {
        let rule = rule.into();
        let (schemas, paths, method_router) = r;
        for (path, item) in &paths.paths {
            for m in methods(item) {
                self.rules.add(m, path, rule);
            }
            self.router = self.router.route(path, method_router.clone());
        }
        if let Some(doc) = &mut self.doc {
            for (path, item) in paths.paths {
                match doc.paths.paths.get_mut(&path) {
                    Some(it) => it.merge_operations(item),
                    None => {
                        doc.paths.paths.insert(path, item);
                    }
                }
            }
            doc.components
                .get_or_insert_with(Default::default)
                .schemas
                .extend(schemas);
        }
        self
    }

    /// An undocumented route: `method` on `path` needs `rule`.
    pub(crate) fn on<H, T>(
        mut self,
        method: Method,
        path: &str,
        rule: impl Into<Rule>,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.rules.add(method, path, rule.into());
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self
    }

    /// A router made elsewhere (the docs page): `GET` on each of `paths` needs `rule`.
    pub(crate) fn merge_get(
        mut self,
        rule: impl Into<Rule>,
        paths: &[&str],
        router: axum::Router<S>,
    ) -> Self {
        let rule = rule.into();
        for p in paths {
            self.rules.add(Method::GET, p, rule);
        }
        self.router = self.router.merge(router);
        self
    }

    /// The OpenAPI document of the routes (empty unless made by [`Routes::documented`]).
    pub(crate) fn into_doc(self) -> OpenApi {
        self.doc.unwrap_or_default()
    }

    /// The router and the rules.
    pub(crate) fn split(self) -> (axum::Router<S>, Rules) {
        (self.router, self.rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeclared_route_needs_admin_and_head_is_get() {
        let mut r = Rules::default();
        r.add(Method::GET, "/a", Need::Page.into());
        assert_eq!(r.need(&Method::GET, "/a", None), Need::Page);
        assert_eq!(r.need(&Method::HEAD, "/a", None), Need::Page);
        assert_eq!(r.need(&Method::DELETE, "/a", None), Need::Admin);
        assert_eq!(r.need(&Method::GET, "/b", None), Need::Admin);
    }
}
