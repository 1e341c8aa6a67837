//! What a user agent is: browser, operating system, device class, or bot.
//!
//! Parsing uses the `ua-parser` crate with the uap-core rules, the dataset
//! most user-agent parsers share, vendored in `data/uap-core` (Apache-2.0;
//! refresh it from the `uap-core` npm package). Matching a string against
//! ~1,000 rules costs tens of microseconds, but user agents repeat heavily,
//! so results are memoised.

use std::sync::{Arc, OnceLock};

use compact_str::CompactString;
use moka::sync::Cache;

static RULES: &str = include_str!("../../data/uap-core/regexes.yaml");

/// Distinct user agents remembered. A day of traffic has a few thousand
/// common ones; the tail is cheap to parse again.
const MEMO_ENTRIES: u64 = 20_000;

/// The kind of device a click came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    Other,
}

impl DeviceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Other => "other",
        }
    }
}

/// A classified user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Browser family ("Chrome", "Mobile Safari"), or "Other".
    pub browser: CompactString,
    /// Operating system family ("Windows", "iOS"), or "Other".
    pub os: CompactString,
    pub device: DeviceClass,
    /// For bots: what it calls itself ("Googlebot", "curl").
    pub bot: Option<CompactString>,
}

impl Agent {
    pub fn is_bot(&self) -> bool {
        self.bot.is_some()
    }

    fn missing() -> Self {
        Self {
            browser: "Other".into(),
            os: "Other".into(),
            device: DeviceClass::Bot,
            bot: Some("(no user agent)".into()),
        }
    }
}

/// Browser families that are programs, not people: HTTP libraries and
/// command-line tools the uap-core rules name but do not mark as spiders.
const AUTOMATED_FAMILIES: &[&str] = &[
    "curl",
    "Wget",
    "Python Requests",
    "Python-urllib",
    "aiohttp",
    "Go-http-client",
    "Java",
    "Apache-HttpClient",
    "okhttp",
    "libwww-perl",
    "PHP",
    "Guzzle",
    "axios",
    "node-fetch",
    "HeadlessChrome",
    "PhantomJS",
    "k6",
];

/// Operating systems whose devices are phones unless the rules say tablet.
const MOBILE_OS: &[&str] = &[
    "Android",
    "iOS",
    "Windows Phone",
    "BlackBerry OS",
    "KaiOS",
    "Tizen",
    "Firefox OS",
    "HarmonyOS",
];

const DESKTOP_OS: &[&str] = &[
    "Windows",
    "Mac OS X",
    "macOS",
    "Linux",
    "Ubuntu",
    "Chrome OS",
    "ChromeOS",
    "Fedora",
    "Debian",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Arch Linux",
    "Mint",
    "Gentoo",
    "Solaris",
];

/// Classifies user agents, memoising the result per distinct string.
pub struct UserAgentClassifier {
    extractor: ua_parser::Extractor<'static>,
    memo: Cache<String, Arc<Agent>>,
}

impl std::fmt::Debug for UserAgentClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgentClassifier")
            .field("memoised", &self.memo.entry_count())
            .finish_non_exhaustive()
    }
}

impl UserAgentClassifier {
    /// The process-wide classifier. The first call compiles the rules
    /// (a few hundred milliseconds): make it from a blocking thread.
    pub fn shared() -> Arc<Self> {
        static SHARED: OnceLock<Arc<UserAgentClassifier>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let regexes: ua_parser::Regexes<'static> =
                    serde_yaml_ng::from_str(RULES).expect("vendored uap-core rules parse");
                let extractor = ua_parser::Extractor::try_from(regexes)
                    .expect("vendored uap-core rules compile");
                Arc::new(Self {
                    extractor,
                    memo: Cache::new(MEMO_ENTRIES),
                })
            })
            .clone()
    }

    pub fn classify(&self, user_agent: Option<&str>) -> Arc<Agent> {
        let Some(ua) = user_agent else {
            static MISSING: OnceLock<Arc<Agent>> = OnceLock::new();
            return MISSING.get_or_init(|| Arc::new(Agent::missing())).clone();
        };
        if let Some(agent) = self.memo.get(ua) {
            return agent;
        }
        let agent = Arc::new(self.parse(ua));
        self.memo.insert(ua.to_owned(), agent.clone());
        agent
    }

    fn parse(&self, ua: &str) -> Agent {
        let (browser, os, device) = self.extractor.extract(ua);
        let browser: CompactString = browser.map_or("Other".into(), |b| b.family.as_ref().into());
        let os: CompactString = os.map_or("Other".into(), |o| o.os.as_ref().into());
        let device_family = device.as_ref().map_or("Other", |d| d.device.as_ref());

        let spider = device_family == "Spider";
        let automated = AUTOMATED_FAMILIES
            .iter()
            .any(|family| family.eq_ignore_ascii_case(&browser));
        if spider || automated {
            let name = if browser == "Other" {
                bot_name(ua)
            } else {
                browser.clone()
            };
            return Agent {
                browser,
                os,
                device: DeviceClass::Bot,
                bot: Some(name),
            };
        }

        let tablet = device_family.contains("iPad")
            || device_family.contains("Tablet")
            || device_family.contains("Kindle")
            || (os == "Android" && !ua.contains("Mobile"));
        let device = if tablet && (MOBILE_OS.contains(&os.as_str()) || device_family != "Other") {
            DeviceClass::Tablet
        } else if MOBILE_OS.contains(&os.as_str()) {
            DeviceClass::Mobile
        } else if DESKTOP_OS.contains(&os.as_str()) {
            DeviceClass::Desktop
        } else {
            DeviceClass::Other
        };
        Agent {
            browser,
            os,
            device,
            bot: None,
        }
    }
}

/// A short name for a bot the rules flag but do not name: the first product
/// token of its user agent ("SomeCrawler/2.1 (+http://…)" → "SomeCrawler").
fn bot_name(ua: &str) -> CompactString {
    let token = ua
        .split([' ', '/', ';', '(', ')'])
        .find(|t| !t.is_empty() && *t != "Mozilla")
        .unwrap_or("Other");
    token.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(ua: &str) -> Arc<Agent> {
        UserAgentClassifier::shared().classify(Some(ua))
    }

    #[test]
    fn browsers_and_devices() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome",
                "Windows",
                DeviceClass::Desktop,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Safari",
                "Mac OS X",
                DeviceClass::Desktop,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                DeviceClass::Mobile,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                DeviceClass::Tablet,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36",
                "Chrome Mobile",
                "Android",
                DeviceClass::Mobile,
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
                "Firefox",
                "Ubuntu",
                DeviceClass::Desktop,
            ),
        ];
        for (ua, browser, os, device) in cases {
            let agent = classify(ua);
            assert_eq!(
                (
                    agent.browser.as_str(),
                    agent.os.as_str(),
                    agent.device,
                    agent.is_bot()
                ),
                (browser, os, device, false),
                "{ua}"
            );
        }
    }

    #[test]
    fn bots_are_recognised_and_named() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Googlebot",
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "bingbot",
            ),
            (
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                "FacebookBot",
            ),
            (
                "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                "Slackbot-LinkExpanding",
            ),
            ("Twitterbot/1.0", "Twitterbot"),
            ("curl/8.5.0", "curl"),
            ("python-requests/2.32.3", "Python Requests"),
        ];
        for (ua, name) in cases {
            let agent = classify(ua);
            assert_eq!(agent.device, DeviceClass::Bot, "{ua}");
            assert_eq!(agent.bot.as_deref(), Some(name), "{ua}");
        }
        assert!(UserAgentClassifier::shared().classify(None).is_bot());
    }

    #[test]
    fn results_are_memoised() {
        let classifier = UserAgentClassifier::shared();
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 memo-test";
        let first = classifier.classify(Some(ua));
        let second = classifier.classify(Some(ua));
        assert!(Arc::ptr_eq(&first, &second));
    }
}
