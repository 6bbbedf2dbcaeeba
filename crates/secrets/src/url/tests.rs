//! The URL helper's tables: what is hidden, what is found for the scrubber, what is refused.

use super::*;

/// `url` is shown as `expected`.
fn check_redacted(url: &str, expected: &str) {
    assert_eq!(redacted(url), expected, "{url}");
    assert_eq!(has_credentials(url), url != expected, "{url}");
}

#[test]
fn redaction_of_user_info() {
    let table: &[(&str, &str)] = &[
        // Neither user-info nor a secret parameter: shown as written, not normalised.
        ("redis://cache:6379", "redis://cache:6379"),
        ("http://collector:4318", "http://collector:4318"),
        ("in-process", "in-process"),
        ("none", "none"),
        ("sqlite://agent-history.db", "sqlite://agent-history.db"),
        ("sqlite:data.db?mode=rwc", "sqlite:data.db?mode=rwc"),
        // User-info, with and without a user name.
        (
            "redis://:pw@cache:6379/2",
            "redis://<credentials>@cache:6379/2",
        ),
        (
            "postgres://app:pw@db/agents",
            "postgres://<credentials>@db/agents",
        ),
        (
            "postgres://app@db/agents",
            "postgres://<credentials>@db/agents",
        ),
        (
            "https://user:key@llm.example/v1",
            "https://<credentials>@llm.example/v1",
        ),
        ("memory://:hunter2@cache", "memory://<credentials>@cache"),
        // An `@` in the password (the last `@` of the authority ends the user-info).
        (
            "postgres://app:p@ss@db/agents",
            "postgres://<credentials>@db/agents",
        ),
        // Percent-encoded user-info.
        (
            "postgres://app:p%40ss%2Fw@db/app",
            "postgres://<credentials>@db/app",
        ),
        // An `@` in the path, the query or the fragment is no user-info.
        (
            "https://llm.example/v1/@models",
            "https://llm.example/v1/@models",
        ),
        (
            "https://llm.example/v1?user=a@b",
            "https://llm.example/v1?user=a@b",
        ),
        ("https://llm.example/v1#x@y", "https://llm.example/v1#x@y"),
    ];
    for (url, expected) in table {
        check_redacted(url, expected);
    }
}

#[test]
fn redaction_of_parameters_and_unparsable_text() {
    let table: &[(&str, &str)] = &[
        // Secret query parameters, whatever their case, with the others kept.
        (
            "postgres://u@h/db?password=pw",
            "postgres://<credentials>@h/db?password=<hidden>",
        ),
        (
            "postgres://h/db?sslmode=require&PassWord=pw&application_name=agents",
            "postgres://h/db?sslmode=require&PassWord=<hidden>&application_name=agents",
        ),
        (
            "postgres://h/db?sslpassword=a&sslkey=/etc/key.pem",
            "postgres://h/db?sslpassword=<hidden>&sslkey=/etc/key.pem",
        ),
        (
            "https://h/v1?token=t&KEY=k&secret=s&apikey=a&access_token=x&model=m",
            "https://h/v1?token=<hidden>&KEY=<hidden>&secret=<hidden>&apikey=<hidden>&access_token=<hidden>&model=m",
        ),
        (
            "redis+unix:///run/redis.sock?pass=pw&db=2",
            "redis+unix:///run/redis.sock?pass=<hidden>&db=2",
        ),
        // A percent-encoded parameter name is still recognised.
        ("https://h/?pass%77ord=pw", "https://h/?pass%77ord=<hidden>"),
        // Odd characters in a value stay hidden up to the next separator.
        (
            "https://h/?password=a%26b=c!&x=1",
            "https://h/?password=<hidden>&x=1",
        ),
        // A secret in the fragment (as OAuth's implicit flow puts it).
        (
            "https://h/cb#access_token=t&state=s",
            "https://h/cb#access_token=<hidden>&state=s",
        ),
        // An empty secret parameter has nothing to hide.
        ("https://h/?password=", "https://h/?password="),
        // Both user-info and a secret parameter.
        (
            "rediss://user:pw@cache:6380/0?token=t",
            "rediss://<credentials>@cache:6380/0?token=<hidden>",
        ),
        // IPv6 hosts.
        ("redis://:pw@[::1]:6379", "redis://<credentials>@[::1]:6379"),
        ("http://[2001:db8::1]:4318", "http://[2001:db8::1]:4318"),
        // Not a URL the parser takes (a `/` or `#` in the password ends its authority): all
        // up to the last `@` is hidden, and secret parameters too.
        ("redis://:pa/ss@host", "redis://<credentials>@host"),
        ("postgres://u:pa#ss@h/db", "postgres://<credentials>@h/db"),
        (
            "redis://:pw@cache:port?password=x",
            "redis://<credentials>@cache:port?password=<hidden>",
        ),
        ("not a url ?password=pw", "not a url ?password=<hidden>"),
        ("user:pw@host", "user:pw@host"),
    ];
    for (url, expected) in table {
        check_redacted(url, expected);
    }
}

/// The secrets the scrubber is given are exactly what redaction hides.
#[test]
fn secrets_in_table() {
    let table: &[(&str, &[&str])] = &[
        ("redis://:hunter2-long@127.0.0.1:6379", &["hunter2-long"]),
        (
            "postgres://app:p%40ss%2Fword-1@db/app",
            &["p%40ss%2Fword-1", "p@ss/word-1"],
        ),
        (
            "postgres://app@db/app?sslmode=require&PASSWORD=from-the-query",
            &["from-the-query"],
        ),
        (
            "https://h/v1?api_key=k1&model=m&token=a+b",
            &["k1", "a+b", "a b"],
        ),
        ("https://h/cb#access_token=t0k3n", &["t0k3n"]),
        ("redis+unix:///run/redis.sock?pass=pw", &["pw"]),
        ("sqlite://agent-history.db", &[]),
        ("https://h/?password=", &[]),
        ("in-process", &[]),
        ("none", &[]),
    ];
    for (url, expected) in table {
        assert_eq!(secrets_in(url), *expected, "{url}");
        for secret in *expected {
            assert!(!redacted(url).contains(secret), "{url}: {secret} shown");
        }
    }
}

/// Accepts `url` with `schemes`, or refuses it with `expected`'s message.
fn check_url(url: &str, schemes: &[Scheme], expected: Result<(), &str>) {
    let got = check(url, schemes).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(
        got.as_ref().copied().map_err(String::as_str),
        expected,
        "{url}"
    );
}

#[test]
fn check_table() {
    let redis = [
        Scheme::with_host("redis"),
        Scheme::with_host("rediss"),
        Scheme::with_host_or_path("redis+unix"),
    ];
    let http = [Scheme::with_host("http"), Scheme::with_host("https")];
    let store = [
        Scheme::with_host_or_path("sqlite"),
        Scheme::with_host_or_path("postgres"),
        Scheme::with_host_or_path("postgresql"),
    ];
    let table: &[(&str, &[Scheme], Result<(), &str>)] = &[
        ("redis://127.0.0.1:6379", &redis, Ok(())),
        ("redis://:pw@cache:6379/2", &redis, Ok(())),
        ("rediss://cache:6380", &redis, Ok(())),
        ("redis://[::1]:6379", &redis, Ok(())),
        ("redis+unix:///run/redis.sock", &redis, Ok(())),
        ("redis://", &redis, Err("it names no host")),
        ("redis://:6379", &redis, Err("it names no host")),
        (
            "redis+unix://",
            &redis,
            Err("it names nothing after `redis+unix:`"),
        ),
        (
            "redis://cache:99999",
            &redis,
            Err("its port is not a number in 1..=65535"),
        ),
        (
            "redis://cache:0",
            &redis,
            Err("its port is not a number in 1..=65535"),
        ),
        (
            "redis://cache:port",
            &redis,
            Err("its port is not a number in 1..=65535"),
        ),
        (
            "http://user:secret@cache:6379",
            &redis,
            Err("its scheme is `http`, not redis://, rediss:// or redis+unix://"),
        ),
        (
            "memory",
            &redis,
            Err(
                "it is not a URL (relative URL without a base: it needs a scheme, such as redis://, rediss:// or redis+unix://)",
            ),
        ),
        ("https://llm.example/v1", &http, Ok(())),
        ("http://[2001:db8::1]:4318", &http, Ok(())),
        ("http://", &http, Err("it names no host")),
        ("https://:443", &http, Err("it names no host")),
        (
            "ftp://files",
            &http,
            Err("its scheme is `ftp`, not http:// or https://"),
        ),
        ("sqlite://data/history.db", &store, Ok(())),
        ("sqlite:data.db", &store, Ok(())),
        ("postgres://app:pw@db:5432/agents", &store, Ok(())),
        ("postgresql:///agents", &store, Ok(())),
        ("sqlite://", &store, Err("it names nothing after `sqlite:`")),
        ("sqlite:", &store, Err("it names nothing after `sqlite:`")),
        (
            "postgres://",
            &store,
            Err("it names nothing after `postgres:`"),
        ),
    ];
    for (url, schemes, expected) in table {
        check_url(url, schemes, *expected);
    }
}
