//! The rewriter: one walk over a search body against the allow-list of the query language.
//! Equality queries (`term`, `terms`, `match`) on deterministically sealed fields become
//! `terms` over their ciphertexts (v2 and v1, under every key of the range); any construct
//! off the allow-list that touches a sealed field, or that cannot be shown not to, is
//! refused (fail closed). A dry run (no keys) checks and counts.

use super::fields::FieldPolicy;
use super::tree::J;
use super::{SearchError, MAX_TERMS, TERMS_PER_KEY};
use crate::crypto::cipher::{CipherError, Padding, Scope, SealingKey, Spec, ValueType};
use crate::crypto::value::Mode;
use crate::json::seal::seal_uri_query;
use crate::json::{Leaf, LeafAction, ValueSealer};

/// Seals in format v1 (scope and padding ignored): the search terms that find events
/// sealed before format v2.
struct V1<'k>(&'k SealingKey);

impl ValueSealer for V1<'_> {
    fn seal(
        &mut self,
        spec: Spec<'_>,
        ty: ValueType,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CipherError> {
        self.0.seal_v1_into(spec.mode, ty, value, out)
    }
}

/// The equality queries this module understands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Query {
    Term,
    Terms,
    Match,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Term => "term",
            Query::Terms => "terms",
            Query::Match => "match",
        }
    }
}

/// One walk over the body: counts (dry run, `keys` = None) or rewrites.
struct Rewriter<'a> {
    policy: &'a dyn FieldPolicy,
    keys: Option<&'a [&'a SealingKey]>,
    terms: usize,
    rewritten: usize,
}

/// What the policy does with one scalar term value.
enum ValueAction {
    Keep,
    Seal(ValueType, Scope, Padding),
    SealUri(Scope, Padding),
}

fn scalar_leaf(v: &J) -> Option<Leaf<'_>> {
    match v {
        J::Str(s) => Some(Leaf::Str(s)),
        J::Num(n) => Some(Leaf::Number(n)),
        J::Bool(b) => Some(Leaf::Bool(*b)),
        J::Null => Some(Leaf::Null),
        J::Arr(_) | J::Obj(_) => None,
    }
}

fn get<'j>(members: &'j [(String, J)], key: &str) -> Option<&'j J> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Rewriter<'_> {
    fn value_action(
        &self,
        q: Query,
        field: &str,
        segments: &[&str],
        v: &J,
    ) -> Result<ValueAction, SearchError> {
        let not = |why| SearchError::NotRewritable {
            query: q.name(),
            field: field.to_string(),
            why,
        };
        let Some(leaf) = scalar_leaf(v) else {
            // A form this module does not know: fine on a plaintext field, refused on a
            // sealed one.
            return match self.policy.action(segments, Leaf::Str("")) {
                LeafAction::Keep => Ok(ValueAction::Keep),
                _ => Err(not("unsupported query form on a sealed field")),
            };
        };
        let ty = match v {
            J::Num(_) => ValueType::Number,
            J::Bool(_) => ValueType::Bool,
            _ => ValueType::String,
        };
        match self.policy.action(segments, leaf) {
            LeafAction::Keep => Ok(ValueAction::Keep),
            LeafAction::Seal(Mode::Deterministic) => {
                let (scope, pad) = self.policy.shape(segments);
                Ok(ValueAction::Seal(ty, scope, pad))
            }
            LeafAction::Seal(Mode::Randomized) | LeafAction::SealUriQuery(Mode::Randomized) => Err(
                not("the field is sealed in randomized mode, so equality cannot be searched"),
            ),
            LeafAction::SealUriQuery(Mode::Deterministic) => match v {
                J::Str(_) => {
                    let (scope, pad) = self.policy.shape(segments);
                    Ok(ValueAction::SealUri(scope, pad))
                }
                _ => Ok(ValueAction::Keep),
            },
        }
    }

    /// The ciphertexts of `v` under every key (in key order), each in format v2 and v1:
    /// events sealed before and after format v2 are found alike.
    fn ciphertexts(
        &mut self,
        action: &ValueAction,
        v: &J,
        out: &mut Vec<J>,
    ) -> Result<(), SearchError> {
        let bytes: &[u8] = match v {
            J::Str(s) => s.as_bytes(),
            J::Num(n) => n.as_bytes(),
            J::Bool(true) => b"true",
            J::Bool(false) => b"false",
            J::Null | J::Arr(_) | J::Obj(_) => b"",
        };
        let keys = self.keys.unwrap_or_default();
        self.terms = self
            .terms
            .saturating_add(keys.len().saturating_mul(TERMS_PER_KEY).max(1));
        if self.terms > MAX_TERMS {
            return Err(SearchError::TooManyTerms { limit: MAX_TERMS });
        }
        for key in keys {
            for v1 in [false, true] {
                let mut buf = Vec::new();
                let r = match action {
                    ValueAction::Seal(ty, scope, pad) => {
                        let spec = Spec {
                            mode: Mode::Deterministic,
                            scope,
                            pad: *pad,
                        };
                        if v1 {
                            key.seal_v1_into(Mode::Deterministic, *ty, bytes, &mut buf)
                        } else {
                            key.seal(spec, *ty, bytes, &mut buf)
                        }
                    }
                    ValueAction::SealUri(scope, pad) => {
                        let spec = Spec {
                            mode: Mode::Deterministic,
                            scope,
                            pad: *pad,
                        };
                        if v1 {
                            seal_uri_query(bytes, &mut V1(key), spec, &mut buf).map(|_| ())
                        } else {
                            seal_uri_query(bytes, &mut &**key, spec, &mut buf).map(|_| ())
                        }
                    }
                    ValueAction::Keep => {
                        buf.extend_from_slice(bytes);
                        Ok(())
                    }
                };
                r.map_err(SearchError::Cipher)?;
                out.push(J::Str(String::from_utf8_lossy(&buf).into_owned()));
            }
        }
        Ok(())
    }

    /// `members` is the object under `term` / `terms` / `match`. Returns the new `terms`
    /// object if the query must be rewritten.
    fn query(&mut self, q: Query, members: &[(String, J)]) -> Result<Option<J>, SearchError> {
        const OPTIONS: [&str; 2] = ["boost", "_name"];
        let fields: Vec<&(String, J)> = members
            .iter()
            .filter(|(k, _)| q != Query::Terms || !OPTIONS.contains(&k.as_str()))
            .collect();
        let mut out: Option<J> = None;
        for (field, v) in fields.iter().map(|m| (&m.0, &m.1)) {
            let raw = field.strip_suffix(".raw");
            let path = raw.unwrap_or(field);
            let segments: Vec<&str> = path.split('.').collect();
            // The value(s) and the options carried over to `terms`.
            let (values, carried): (Vec<&J>, Vec<(String, J)>) = match (q, v) {
                (Query::Terms, J::Arr(items)) => (items.iter().collect(), Vec::new()),
                (Query::Term, J::Obj(o)) | (Query::Match, J::Obj(o)) => {
                    let key = if q == Query::Term { "value" } else { "query" };
                    let carried = o
                        .iter()
                        .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
                        .cloned()
                        .collect();
                    match get(o, key) {
                        Some(inner) => (vec![inner], carried),
                        None => (vec![v], carried),
                    }
                }
                _ => (vec![v], Vec::new()),
            };
            let mut actions = Vec::with_capacity(values.len());
            for value in &values {
                actions.push(self.value_action(q, field, &segments, value)?);
            }
            if actions.iter().all(|a| matches!(a, ValueAction::Keep)) {
                continue;
            }
            if q == Query::Match && raw.is_none() {
                return Err(SearchError::NotRewritable {
                    query: q.name(),
                    field: field.to_string(),
                    why: "a sealed value can only be matched exactly: use its `.raw` field",
                });
            }
            if fields.len() != 1 {
                return Err(SearchError::NotRewritable {
                    query: q.name(),
                    field: field.to_string(),
                    why: "a query on a sealed field must name exactly one field",
                });
            }
            if let (Query::Term, J::Obj(o)) = (q, v) {
                if o.iter()
                    .any(|(k, v)| k == "case_insensitive" && *v == J::Bool(true))
                {
                    return Err(SearchError::NotRewritable {
                        query: q.name(),
                        field: field.to_string(),
                        why: "case_insensitive cannot apply to ciphertexts",
                    });
                }
            }
            self.rewritten += 1;
            let mut list = Vec::new();
            for (value, action) in values.iter().zip(&actions) {
                match action {
                    ValueAction::Keep => list.push((*value).clone()),
                    sealed => self.ciphertexts(sealed, value, &mut list)?,
                }
            }
            let mut obj = vec![(field.to_string(), J::Arr(list))];
            obj.extend(carried);
            if q == Query::Terms {
                obj.extend(
                    members
                        .iter()
                        .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
                        .cloned(),
                );
            }
            out = Some(J::Obj(obj));
        }
        Ok(out)
    }

    /// The whole body: an object whose members are on the allow-list
    /// ([`ALLOWED_TOP`]); anything else is refused before anything leaves.
    fn body(&mut self, j: &mut J) -> Result<(), SearchError> {
        let J::Obj(members) = j else {
            return Err(not_allowed("a search body that is not an object", ""));
        };
        for (k, v) in members.iter_mut() {
            match k.as_str() {
                "query" | "post_filter" => self.clause(v, k)?,
                "aggs" | "aggregations" => self.aggs(v)?,
                "sort" => self.sort(v)?,
                "_source" | "stored_fields" | "docvalue_fields" => field_list(v, k)?,
                "size"
                | "from"
                | "track_total_hits"
                | "timeout"
                | "terminate_after"
                | "min_score"
                | "explain"
                | "version"
                | "seq_no_primary_term"
                | "track_scores" => scalar(v, k)?,
                other => return Err(not_allowed(other, "the body")),
            }
        }
        Ok(())
    }

    /// One query clause: an object with exactly one member, a query type on the allow-list.
    fn clause(&mut self, j: &mut J, at: &str) -> Result<(), SearchError> {
        let J::Obj(members) = j else {
            return Err(not_allowed("a query that is not an object", at));
        };
        let [(k, v)] = members.as_mut_slice() else {
            return Err(not_allowed("a query object with other than one member", at));
        };
        let kind = k.clone();
        match kind.as_str() {
            "bool" => self.compound(
                v,
                &kind,
                &["must", "filter", "should", "must_not"],
                &["minimum_should_match", "boost", "_name"],
            ),
            "constant_score" => self.compound(v, &kind, &["filter"], &["boost", "_name"]),
            "dis_max" => self.compound(v, &kind, &["queries"], &["tie_breaker", "boost", "_name"]),
            "nested" => self.compound(
                v,
                &kind,
                &["query"],
                &["path", "score_mode", "ignore_unmapped", "boost", "_name"],
            ),
            "match_all" | "match_none" => options_only(v, &kind, &["boost", "_name"]),
            "exists" => options_only(v, &kind, &["field", "boost", "_name"]),
            "ids" => options_only(v, &kind, &["values", "boost", "_name"]),
            "term" | "terms" | "match" => {
                let q = match kind.as_str() {
                    "term" => Query::Term,
                    "terms" => Query::Terms,
                    _ => Query::Match,
                };
                let J::Obj(o) = &*v else {
                    return Err(not_allowed("a query that is not an object", &kind));
                };
                if let Some(new) = self.query(q, o)? {
                    *k = "terms".to_string();
                    *v = new;
                }
                Ok(())
            }
            "prefix"
            | "wildcard"
            | "regexp"
            | "fuzzy"
            | "range"
            | "match_phrase"
            | "match_phrase_prefix"
            | "match_bool_prefix" => {
                let J::Obj(o) = &*v else {
                    return Err(not_allowed("a query that is not an object", &kind));
                };
                self.not_on_sealed(&kind, o)
            }
            // Not on the allow-list: query_string, simple_query_string, multi_match,
            // combined_fields, more_like_this, span_*, terms_set, script, script_score,
            // function_score, intervals, wrapper, percolate, … Each can carry a value to a
            // field Veil cannot see or check, so none is forwarded.
            other => Err(not_allowed(other, at)),
        }
    }

    /// `bool`, `constant_score`, `dis_max`, `nested`: `clauses` hold a query or a list of
    /// queries; `options` are scalars (or, for `path`, a field name).
    fn compound(
        &mut self,
        v: &mut J,
        kind: &str,
        clauses: &[&str],
        options: &[&str],
    ) -> Result<(), SearchError> {
        let J::Obj(members) = v else {
            return Err(not_allowed("a query that is not an object", kind));
        };
        for (k, v) in members.iter_mut() {
            if clauses.contains(&k.as_str()) {
                match v {
                    J::Arr(items) => {
                        for item in items {
                            self.clause(item, kind)?;
                        }
                    }
                    other => self.clause(other, kind)?,
                }
            } else if options.contains(&k.as_str()) {
                scalar(v, k)?;
            } else {
                return Err(not_allowed(k, kind));
            }
        }
        Ok(())
    }

    /// `aggs`: name → definition.
    fn aggs(&mut self, j: &mut J) -> Result<(), SearchError> {
        let J::Obj(aggs) = j else {
            return Err(not_allowed("aggregations that are not an object", "aggs"));
        };
        for (_, def) in aggs.iter_mut() {
            self.aggregation(def)?;
        }
        Ok(())
    }

    /// One aggregation definition: one type on the allow-list, its options, and optional
    /// sub-aggregations and `meta`. Options that carry values (`include`, `exclude`,
    /// `missing`, `ranges`) are refused on a sealed field: they would be plaintext.
    fn aggregation(&mut self, def: &mut J) -> Result<(), SearchError> {
        let J::Obj(members) = def else {
            return Err(not_allowed("an aggregation that is not an object", "aggs"));
        };
        let mut types = 0;
        for (k, v) in members.iter_mut() {
            let kind = k.as_str();
            let options: &[&str] = match kind {
                "aggs" | "aggregations" => {
                    self.aggs(v)?;
                    continue;
                }
                "meta" => continue,
                "filter" => {
                    types += 1;
                    self.clause(v, "filter")?;
                    continue;
                }
                "filters" => {
                    types += 1;
                    self.filters(v)?;
                    continue;
                }
                "top_hits" => {
                    types += 1;
                    self.top_hits(v)?;
                    continue;
                }
                "terms" => &[
                    "field",
                    "size",
                    "shard_size",
                    "min_doc_count",
                    "shard_min_doc_count",
                    "order",
                    "show_term_doc_count_error",
                    "collect_mode",
                    "execution_hint",
                    "missing",
                    "include",
                    "exclude",
                ],
                "date_histogram" => &[
                    "field",
                    "calendar_interval",
                    "fixed_interval",
                    "interval",
                    "format",
                    "time_zone",
                    "min_doc_count",
                    "extended_bounds",
                    "hard_bounds",
                    "order",
                    "offset",
                    "keyed",
                    "missing",
                ],
                "histogram" => &[
                    "field",
                    "interval",
                    "min_doc_count",
                    "extended_bounds",
                    "hard_bounds",
                    "order",
                    "offset",
                    "keyed",
                    "missing",
                ],
                "range" | "date_range" => {
                    &["field", "ranges", "keyed", "format", "time_zone", "missing"]
                }
                "cardinality" => &["field", "precision_threshold", "missing"],
                "value_count" | "min" | "max" | "avg" | "sum" | "stats" | "extended_stats" => {
                    &["field", "missing", "format"]
                }
                "percentiles" => &["field", "percents", "keyed", "tdigest", "missing"],
                "missing" => &["field"],
                "nested" | "reverse_nested" => &["path"],
                "global" => &[],
                other => return Err(not_allowed(other, "aggs")),
            };
            types += 1;
            self.agg_options(kind, v, options)?;
        }
        if types != 1 {
            return Err(not_allowed(
                "an aggregation with other than one type",
                "aggs",
            ));
        }
        Ok(())
    }

    fn agg_options(&mut self, kind: &str, v: &J, allowed: &[&str]) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("an aggregation that is not an object", kind));
        };
        let field = match get(o, "field") {
            Some(J::Str(f)) => Some(f.as_str()),
            Some(_) => return Err(not_allowed("a `field` that is not a string", kind)),
            None => None,
        };
        for (k, v) in o {
            if !allowed.contains(&k.as_str()) {
                return Err(not_allowed(k, kind));
            }
            // Nothing below an option is a query or a script: plain data only.
            no_objects_named(v, &["script", "params"], kind)?;
            if matches!(k.as_str(), "include" | "exclude" | "missing" | "ranges") {
                if let Some(f) = field {
                    if self.field_is_sealed(f) {
                        return Err(SearchError::NotRewritable {
                            query: "aggregation",
                            field: f.to_string(),
                            why: "`include`, `exclude`, `missing` and `ranges` carry values, \
                                  which cannot be sealed here: refused on a sealed field",
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn filters(&mut self, v: &mut J) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("`filters` that is not an object", "aggs"));
        };
        for (k, v) in o.iter_mut() {
            match (k.as_str(), v) {
                ("filters", J::Obj(named)) => {
                    for (_, q) in named.iter_mut() {
                        self.clause(q, "filters")?;
                    }
                }
                ("filters", J::Arr(items)) => {
                    for q in items.iter_mut() {
                        self.clause(q, "filters")?;
                    }
                }
                ("other_bucket" | "other_bucket_key" | "keyed", v) => scalar(v, k)?,
                (other, _) => return Err(not_allowed(other, "filters")),
            }
        }
        Ok(())
    }

    fn top_hits(&mut self, v: &mut J) -> Result<(), SearchError> {
        let J::Obj(o) = v else {
            return Err(not_allowed("`top_hits` that is not an object", "aggs"));
        };
        for (k, v) in o.iter_mut() {
            match k.as_str() {
                "size" | "from" => scalar(v, k)?,
                "sort" => self.sort(v)?,
                "_source" | "stored_fields" | "docvalue_fields" => field_list(v, k)?,
                other => return Err(not_allowed(other, "top_hits")),
            }
        }
        Ok(())
    }

    /// `sort`: field names, `_score`, `_doc`, or `{field: order | {options}}`. A `missing`
    /// other than `_first` / `_last` is a value: refused on a sealed field.
    fn sort(&mut self, v: &J) -> Result<(), SearchError> {
        let items: Vec<&J> = match v {
            J::Arr(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            match item {
                J::Str(_) => {}
                J::Obj(o) => {
                    for (field, spec) in o {
                        if field.starts_with('_') && !matches!(field.as_str(), "_score" | "_doc") {
                            return Err(not_allowed(field, "sort"));
                        }
                        match spec {
                            J::Str(_) => {}
                            J::Obj(opts) => {
                                for (k, ov) in opts {
                                    match k.as_str() {
                                        "order" | "mode" | "unmapped_type" | "format"
                                        | "numeric_type" => scalar(ov, k)?,
                                        "missing" => {
                                            let keyword = matches!(ov, J::Str(m) if m == "_first" || m == "_last");
                                            if !keyword && self.field_is_sealed(field) {
                                                return Err(not_allowed(
                                                    "`missing` with a value on a sealed field",
                                                    "sort",
                                                ));
                                            }
                                            scalar(ov, k)?;
                                        }
                                        other => return Err(not_allowed(other, "sort")),
                                    }
                                }
                            }
                            _ => {
                                return Err(not_allowed(
                                    "a sort that is not a name or object",
                                    "sort",
                                ))
                            }
                        }
                    }
                }
                _ => return Err(not_allowed("a sort that is not a name or object", "sort")),
            }
        }
        Ok(())
    }

    /// Does the policy seal anything (of any type) at this field (`.raw` removed)?
    fn field_is_sealed(&self, field: &str) -> bool {
        let path = field.strip_suffix(".raw").unwrap_or(field);
        let segments: Vec<&str> = path.split('.').collect();
        [Leaf::Str("x"), Leaf::Number("1"), Leaf::Bool(true)]
            .into_iter()
            .any(|leaf| !matches!(self.policy.action(&segments, leaf), LeafAction::Keep))
    }

    /// Queries that cannot match ciphertexts (ranges, prefixes, patterns, phrases) are
    /// refused on sealed fields: forwarded, they would carry the protected plaintext.
    fn not_on_sealed(&self, kind: &str, members: &[(String, J)]) -> Result<(), SearchError> {
        const VALUES: [&str; 8] = ["value", "query", "gt", "gte", "lt", "lte", "from", "to"];
        for (field, v) in members {
            let path = field.strip_suffix(".raw").unwrap_or(field);
            let segments: Vec<&str> = path.split('.').collect();
            let values: Vec<&J> = match v {
                J::Obj(o) => o
                    .iter()
                    .filter(|(k, _)| VALUES.contains(&k.as_str()))
                    .map(|(_, v)| v)
                    .collect(),
                other => vec![other],
            };
            let sealed = values.iter().any(|v| {
                scalar_leaf(v).is_some_and(|leaf| {
                    !matches!(self.policy.action(&segments, leaf), LeafAction::Keep)
                })
            });
            if sealed {
                return Err(SearchError::NotRewritable {
                    query: match kind {
                        "prefix" => "prefix",
                        "wildcard" => "wildcard",
                        "regexp" => "regexp",
                        "fuzzy" => "fuzzy",
                        "range" => "range",
                        _ => "match_phrase",
                    },
                    field: field.clone(),
                    why: "only equality (term, terms, match on .raw) can be searched on a sealed field",
                });
            }
        }
        Ok(())
    }
}

/// A construct not on the allow-list. `construct` is a DSL name or a description; a name
/// that is not a plain identifier is not echoed (it could be anything a client sent).
fn not_allowed(construct: &str, at: &str) -> SearchError {
    let plain = |s: &str| {
        s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b' ' | b'`'))
    };
    SearchError::NotAllowed {
        construct: if plain(construct) {
            construct.to_string()
        } else {
            "<a member>".to_string()
        },
        at: if plain(at) {
            at.to_string()
        } else {
            String::new()
        },
    }
}

/// A scalar option (number, string, boolean, null).
fn scalar(v: &J, at: &str) -> Result<(), SearchError> {
    match v {
        J::Arr(_) | J::Obj(_) => Err(not_allowed("a structured value", at)),
        _ => Ok(()),
    }
}

/// `_source`-like options: field names (strings, lists of strings, `{includes, excludes}`,
/// `{field, format}`) or a boolean.
fn field_list(v: &J, at: &str) -> Result<(), SearchError> {
    match v {
        J::Bool(_) | J::Str(_) => Ok(()),
        J::Arr(items) => items.iter().try_for_each(|i| field_list(i, at)),
        J::Obj(o) => o.iter().try_for_each(|(k, v)| match k.as_str() {
            "includes" | "excludes" | "include" | "exclude" | "field" | "format" => {
                field_list(v, at)
            }
            other => Err(not_allowed(other, at)),
        }),
        J::Null | J::Num(_) => Err(not_allowed("a value that is not a field name", at)),
    }
}

/// A query that only takes options (`match_all`, `exists`, `ids`): its members are on
/// `allowed`, and their values are scalars or lists of scalars.
fn options_only(v: &J, kind: &str, allowed: &[&str]) -> Result<(), SearchError> {
    let J::Obj(o) = v else {
        return Err(not_allowed("a query that is not an object", kind));
    };
    for (k, v) in o {
        if !allowed.contains(&k.as_str()) {
            return Err(not_allowed(k, kind));
        }
        match v {
            J::Arr(items) => items.iter().try_for_each(|i| scalar(i, k))?,
            other => scalar(other, k)?,
        }
    }
    Ok(())
}

/// Refuses any object member named in `names` anywhere below `v`.
fn no_objects_named(v: &J, names: &[&str], at: &str) -> Result<(), SearchError> {
    match v {
        J::Arr(items) => items
            .iter()
            .try_for_each(|i| no_objects_named(i, names, at)),
        J::Obj(o) => o.iter().try_for_each(|(k, v)| {
            if names.contains(&k.as_str()) {
                Err(not_allowed(k, at))
            } else {
                no_objects_named(v, names, at)
            }
        }),
        _ => Ok(()),
    }
}

/// Rewrites `j` (`keys` given) or only checks it and counts (`keys` None): how many equality
/// queries on deterministically sealed fields were (or would be) rewritten.
pub(super) fn rewrite(
    j: &mut J,
    policy: &dyn FieldPolicy,
    keys: Option<&[&SealingKey]>,
) -> Result<usize, SearchError> {
    let mut r = Rewriter {
        policy,
        keys,
        terms: 0,
        rewritten: 0,
    };
    r.body(j)?;
    Ok(r.rewritten)
}
