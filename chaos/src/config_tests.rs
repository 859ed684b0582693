//! Config parsing and validation: the repository's topology files load, and
//! every error names its field.

use super::*;

const WAN_3: &str = include_str!("../../regions/wan-3.toml");
const LOCAL_3: &str = include_str!("../../regions/local-3.toml");

fn err(text: &str) -> String {
    match WanConfig::from_toml(text).and_then(|c| c.resolve().map(|_| c)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const TWO: &str = r#"
[[regions]]
name = "a"
[[regions]]
name = "b"
[[links]]
regions = ["a", "b"]
rtt_ms = 70
"#;

#[test]
fn the_three_region_topology_loads_under_the_loopback_plan() {
    let cfg = WanConfig::from_toml(WAN_3).unwrap();
    assert_eq!(cfg.regions, ["us-east", "eu-west", "ap-south"]);
    assert_eq!(cfg.control_addr, Some("127.0.0.1:7390".parse().unwrap()));
    // Three ports on each of nine nodes.
    assert_eq!(cfg.listeners.len(), 27);
    let quic = &cfg.listeners[0];
    assert_eq!(quic.name, "us-east/us-east-1/quic");
    assert_eq!(quic.protocol, Protocol::Udp);
    assert_eq!(quic.listen, "127.1.1.1:7379".parse().unwrap());
    assert_eq!(quic.upstream, "127.0.1.1:7379".parse().unwrap());
    let http = cfg
        .listeners
        .iter()
        .find(|l| l.name == "ap-south/ap-south-3/http")
        .unwrap();
    assert_eq!(http.protocol, Protocol::Tcp);
    assert_eq!(http.listen, "127.1.3.3:7584".parse().unwrap());
    assert_eq!(http.upstream, "127.0.3.3:7584".parse().unwrap());
    let r = cfg.resolve().unwrap();
    let t = &r.table;
    let us = t.region("us-east").unwrap();
    let ap = t.region("ap-south").unwrap();
    let params = t.params(crate::table::LinkId {
        from: Some(ap),
        to: Some(us),
    });
    assert_eq!((params.rtt_ms, params.jitter_ms), (200, 4));
    assert_eq!(r.sources.classify("127.0.3.2".parse().unwrap()), Some(ap));
    assert_eq!(r.sources.classify("127.0.0.1".parse().unwrap()), None);
}

#[test]
fn the_one_region_topology_loads_unknown_fields_and_all() {
    let cfg = WanConfig::from_toml(LOCAL_3).unwrap();
    assert_eq!(cfg.regions, ["local"]);
    assert_eq!(cfg.listeners.len(), 9);
    assert!(cfg.resolve().is_ok());
}

#[test]
fn wan_settings_and_explicit_listeners() {
    let text = format!(
        "{TWO}\n[wan]\nplan = \"none\"\ndefault_region = \"a\"\nseed = 7\n\
         flow_idle_ms = 500\nlink_queue_packets = 10\n\
         [[wan.sources]]\ncidr = \"127.0.9.0/24\"\nregion = \"b\"\n\
         [[wan.listeners]]\nname = \"etcd-b-from-a\"\nprotocol = \"tcp\"\n\
         listen = \"127.3.2.1:2379\"\nupstream = \"127.0.2.1:2379\"\n\
         region = \"b\"\nsource_region = \"a\"\n"
    );
    let cfg = WanConfig::from_toml(&text).unwrap();
    assert_eq!(cfg.seed, Some(7));
    assert_eq!(cfg.limits.flow_idle, Duration::from_millis(500));
    assert_eq!(cfg.limits.link_queue_packets, 10);
    assert_eq!(cfg.limits.link_queue_bytes, DEFAULT_LINK_QUEUE_BYTES);
    assert_eq!(cfg.listeners.len(), 1);
    let r = cfg.resolve().unwrap();
    let (a, b) = (r.table.region("a").unwrap(), r.table.region("b").unwrap());
    assert_eq!(r.listeners[0].classify, Classify::Fixed(a));
    assert_eq!(r.listeners[0].region, b);
    assert_eq!(r.sources.classify("127.0.9.4".parse().unwrap()), Some(b));
    assert_eq!(r.sources.classify("127.0.0.1".parse().unwrap()), Some(a));
}

#[test]
fn every_pair_of_regions_needs_exactly_one_link() {
    let missing = "[[regions]]\nname = \"a\"\n[[regions]]\nname = \"b\"\n";
    assert!(err(missing).contains("no link between a and b"));
    let twice = format!("{TWO}\n[[links]]\nregions = [\"b\", \"a\"]\nrtt_ms = 1\n");
    assert!(err(&twice).starts_with("links[1]"), "{}", err(&twice));
    // A region's own link is optional and allowed.
    let own = format!("{TWO}\n[[links]]\nregions = [\"a\", \"a\"]\nrtt_ms = 1\n");
    assert!(WanConfig::from_toml(&own).unwrap().resolve().is_ok());
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (TWO.replace("rtt_ms = 70", "rtt_ms = 70000"), "links[0]"),
        (
            TWO.replace("rtt_ms = 70", "rtt_ms = 70\nloss = 1.5"),
            "links[0]",
        ),
        (
            TWO.replace("[\"a\", \"b\"]", "[\"a\", \"c\"]"),
            "links[0].regions",
        ),
        (TWO.replace("[\"a\", \"b\"]", "[\"a\"]"), "links[0].regions"),
        (
            format!("{TWO}[wan]\ncontrol_addr = \"nope\"\n"),
            "wan.control_addr",
        ),
        (
            format!("{TWO}[wan]\ndefault_region = \"x\"\n"),
            "wan.default_region",
        ),
        (
            format!("{TWO}[wan]\nflow_idle_ms = 1\n"),
            "wan.flow_idle_ms",
        ),
        (format!("{TWO}[wan]\nplan = \"cloud\"\n"), "wan.plan"),
        (
            format!("{TWO}[[wan.sources]]\ncidr = \"127.0.0.0/40\"\nregion = \"a\"\n"),
            "wan.sources[0].cidr",
        ),
        (
            format!("{TWO}[[wan.sources]]\ncidr = \"127.0.0.0/8\"\nregion = \"z\"\n"),
            "wan.sources[0].region",
        ),
    ];
    for (text, field) in cases {
        let e = err(&text);
        assert!(e.starts_with(field), "expected {field}: {e}");
    }
}

#[test]
fn wan_refuses_unknown_fields_but_the_rest_ignores_them() {
    let typo = format!("{TWO}[wan]\ncontrol_adr = \"127.0.0.1:1\"\n");
    assert!(err(&typo).contains("control_adr"), "{}", err(&typo));
    let extra = TWO.replace("rtt_ms = 70", "rtt_ms = 70\nbandwidth_mbps = 100")
        + "\nterraform = { provider = \"aws\" }\n";
    assert!(WanConfig::from_toml(&extra).is_ok());
}

#[test]
fn listener_names_and_addresses_are_unique() {
    let mut cfg = WanConfig::from_toml(WAN_3).unwrap();
    let mut dup = cfg.listeners[0].clone();
    cfg.listeners.push(dup.clone());
    assert!(cfg.resolve().unwrap_err().to_string().contains("unique"));
    cfg.listeners.pop();
    dup.name = "other".into();
    cfg.listeners.push(dup);
    assert!(cfg
        .resolve()
        .unwrap_err()
        .to_string()
        .contains("already a listener's address"));
}

#[test]
fn the_loopback_plan_refuses_nodes_beyond_its_numbering() {
    let mut cfg = WanConfig::new(["a"]);
    let ports = NodePorts {
        quic_port: Some(1),
        ..NodePorts::default()
    };
    assert!(cfg.add_loopback_node(0, 249, "n", ports).is_ok());
    assert!(cfg.add_loopback_node(0, 250, "n", ports).is_err());
    assert!(cfg.add_loopback_node(1, 0, "n", ports).is_err());
}
