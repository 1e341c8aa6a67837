use super::*;

fn policy() -> UrlPolicy {
    UrlPolicy::new(2048, [HostIdentity::parse("sho.rt").expect("a host")])
}

fn parse(input: &str) -> Result<TargetUrl, UrlError> {
    TargetUrl::parse(input, &policy())
}

#[test]
fn accepts_and_normalises_http_urls() {
    let url = parse("  HTTPS://Example.COM/a b?q=1#frag ").expect("valid");
    assert_eq!(url.as_str(), "https://example.com/a%20b?q=1#frag");
    assert_eq!(
        parse("http://example.com").expect("valid").as_str(),
        "http://example.com/"
    );
}

#[test]
fn stores_international_hosts_as_punycode() {
    let url = parse("https://bücher.example/straße").expect("valid");
    assert_eq!(url.as_str(), "https://xn--bcher-kva.example/stra%C3%9Fe");
}

#[test]
fn refuses_other_schemes() {
    for (input, scheme) in [
        ("javascript:alert(1)", "javascript"),
        ("data:text/html,<script>", "data"),
        ("file:///etc/passwd", "file"),
        ("ftp://example.com/", "ftp"),
        ("JavaScript:alert(1)", "javascript"),
    ] {
        assert_eq!(
            parse(input),
            Err(UrlError::Scheme(scheme.into())),
            "{input}"
        );
    }
}

#[test]
fn refuses_relative_and_hostless_urls() {
    for input in [
        "/relative/path",
        "example.com/x",
        "//example.com/x",
        "http://",
        "",
    ] {
        assert!(
            matches!(parse(input), Err(UrlError::Malformed(_))),
            "{input}"
        );
    }
}

#[test]
fn refuses_userinfo() {
    assert_eq!(
        parse("https://user:pw@example.com/"),
        Err(UrlError::Userinfo)
    );
    assert_eq!(parse("https://user@example.com/"), Err(UrlError::Userinfo));
    assert_eq!(
        parse("https://google.com@evil.example/"),
        Err(UrlError::Userinfo)
    );
}

#[test]
fn refuses_control_characters_raw_or_encoded() {
    for input in [
        "https://example.com/\r\nSet-Cookie:x=1",
        "https://example.com/a\nb",
        "https://example.com/a\tb",
        "https://example.com/\u{0}",
        "https://example.com/\u{85}",
        "https://example.com/%0d%0aSet-Cookie:x=1",
        "https://example.com/?q=%0A",
        "https://example.com/#%7f",
        "https://example.com/%00",
    ] {
        assert_eq!(parse(input), Err(UrlError::ControlCharacters), "{input:?}");
    }
    assert!(parse("https://example.com/%20%7E%E2%82%AC").is_ok());
}

#[test]
fn refuses_overlong_urls_before_and_after_normalising() {
    let long = format!("https://example.com/{}", "a".repeat(2048));
    assert_eq!(parse(&long), Err(UrlError::TooLong(2048)));
    // 600 spaces become 1800 bytes of %20.
    let expands = format!("https://example.com/{}", " x".repeat(600));
    assert!(expands.len() < 2048);
    assert_eq!(parse(&expands), Err(UrlError::TooLong(2048)));
}

#[test]
fn refuses_links_to_the_service_itself() {
    for spelling in [
        "https://SHO.RT/abc",
        "http://sho.rt:8080/",
        "https://sho.rt./abc",
        "https://ＳＨＯ．ＲＴ/abc",
        "https://sho%2Ert/abc",
    ] {
        assert_eq!(
            parse(spelling),
            Err(UrlError::BlockedHost("sho.rt".into())),
            "{spelling}"
        );
    }
    assert!(parse("https://sub.sho.rt/abc").is_ok());
    assert!(parse("https://sho.rt.example/abc").is_ok());
}

#[test]
fn loopback_is_one_host_however_written() {
    let policy = UrlPolicy::new(
        2048,
        [HostIdentity::of_ip("127.0.0.1".parse().expect("ip"))],
    );
    for spelling in [
        "http://localhost:8080/x",
        "http://LOCALHOST./x",
        "http://app.localhost/x",
        "http://127.0.0.1/x",
        "http://127.1.2.3/x",
        "http://2130706433/x",
        "http://0x7f000001/x",
        "http://0177.0.0.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[0:0:0:0:0:ffff:7f00:1]/x",
        "http://0.0.0.0/x",
        "http://[::]/x",
        "http://[::127.0.0.1]/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[2002:7f00:1::]/x",
        "http://[::ffff:0:7f00:1]/x",
        "http://localhost.localdomain/x",
        "http://ip6-localhost/x",
    ] {
        assert!(
            matches!(
                TargetUrl::parse(spelling, &policy),
                Err(UrlError::BlockedHost(_))
            ),
            "{spelling} was accepted"
        );
    }
    assert!(TargetUrl::parse("http://localhost.example/x", &policy).is_ok());
    assert!(TargetUrl::parse("http://128.0.0.1/x", &policy).is_ok());
    // Without loopback blocked, a developer may link to their machine.
    assert!(parse("http://localhost:3000/x").is_ok());
}

#[test]
fn ip_hosts_compare_as_addresses() {
    let policy = UrlPolicy::new(2048, [HostIdentity::parse("10.0.0.5").expect("ip")]);
    for spelling in ["http://10.0.0.5/", "http://10.5/", "http://[::ffff:a00:5]/"] {
        assert!(
            matches!(
                TargetUrl::parse(spelling, &policy),
                Err(UrlError::BlockedHost(_))
            ),
            "{spelling}"
        );
    }
    assert!(TargetUrl::parse("http://10.0.0.6/", &policy).is_ok());
    assert!(TargetUrl::parse("http://[64:ff9b::a00:5]/", &policy).is_err());
    assert!(TargetUrl::parse("http://[2002:a00:5::1]/", &policy).is_err());
    assert!(TargetUrl::parse("http://[2001:db8::a00:5]/", &policy).is_ok());
    let v6 = UrlPolicy::new(2048, [HostIdentity::parse("[2001:db8::1]").expect("ip")]);
    assert!(TargetUrl::parse("http://[2001:DB8:0::1]/", &v6).is_err());
}

#[test]
fn refuses_hosts_that_cannot_exist_in_dns() {
    let long_label = format!("https://{}.example/", "a".repeat(64));
    let long_name = format!("https://{}example/", "abcdefghi.".repeat(25));
    for input in [
        "https://./",
        "https://../",
        "https://a..b/",
        "https://.example/",
        long_label.as_str(),
        long_name.as_str(),
        "https://exa!mple.com/",
        "https://ex$ample.com/",
        "https://-/",
        "https://a-.example/",
        "https://-a.example/",
    ] {
        assert!(
            matches!(
                parse(input),
                Err(UrlError::InvalidHost(_) | UrlError::Malformed(_))
            ),
            "{input} was accepted: {:?}",
            parse(input)
        );
    }
    for input in [
        &format!("https://{}.example/", "a".repeat(63)),
        "https://under_score.example/",
        "https://example.com./",
        "https://xn--bcher-kva.example/",
    ] {
        assert!(parse(input).is_ok(), "{input} was refused");
    }
}

#[test]
fn configured_hosts_parse_by_identity() {
    assert_eq!(
        HostIdentity::parse("Sho.Rt."),
        Ok(HostIdentity::Name("sho.rt".into()))
    );
    assert_eq!(HostIdentity::parse("localhost"), Ok(HostIdentity::Loopback));
    assert_eq!(HostIdentity::parse("[::1]"), Ok(HostIdentity::Loopback));
    assert_eq!(
        HostIdentity::parse("bücher.example"),
        Ok(HostIdentity::Name("xn--bcher-kva.example".into()))
    );
    for bad in ["", "a/b", "host:80", "a b", "a..b", "[::1"] {
        assert!(HostIdentity::parse(bad).is_err(), "{bad}");
    }
}
