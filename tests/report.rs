//! `daxlink demo --report DIR`: the page is well-formed XHTML (a strict XML
//! parser reads it), every scenario has a picture per step under every
//! model, the breaking steps are marked where the results say the scenario
//! broke, the JSON next to it is valid and is what `--json` prints plus the
//! recorded frames, and headless Chromium renders it.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::Value;

/// Reads the page with python3's xml.etree (strict: an unclosed tag, an
/// unquoted attribute or an undefined entity fails) and prints, as JSON,
/// every step cell and the summary table's outcomes.
const PARSE: &str = r#"
import json, sys, xml.etree.ElementTree as ET
X = '{http://www.w3.org/1999/xhtml}'
S = '{http://www.w3.org/2000/svg}'
root = ET.parse(sys.argv[1]).getroot()
cells = []
for td in root.iter(X + 'td'):
    if td.get('data-scenario') is None:
        continue
    cls = td.get('class', '').split()
    cells.append({
        'scenario': td.get('data-scenario'), 'model': td.get('data-model'),
        'step': int(td.get('data-step')), 'breaks': td.get('data-breaks'),
        'marked': 'breaks' in cls, 'stopped': 'stopped' in cls,
        'pictures': len([s for s in td.iter(S + 'svg')]),
        'why': len([p for p in td.iter(X + 'p') if 'why' in p.get('class', '').split()]),
        'say': len([p for p in td.iter(X + 'p') if 'say' in p.get('class', '').split()]),
        'label': ''.join(next(p for p in td.iter(X + 'p') if p.get('class') == 'step').itertext()),
    })
glossary = [''.join(dt.itertext()) for dl in root.iter(X + 'dl') if dl.get('class') == 'glossary'
            for dt in dl.iter(X + 'dt')]
outcomes = [td.get('data-outcome') for td in root.iter(X + 'td') if td.get('data-outcome')]
print(json.dumps({'cells': cells, 'outcomes': outcomes, 'glossary': glossary,
                  'title': root.find(X + 'head/' + X + 'title').text}))
"#;

fn chromium(dir: &Path, args: &[&str], page: &Path) -> (bool, Vec<u8>, String) {
    let mut a = vec!["--hide-scrollbars"];
    a.extend_from_slice(args);
    chromium_raw(dir, &a, page)
}

/// Chromium as `chromium` runs it, without hiding scrollbars unless asked.
fn chromium_raw(dir: &Path, args: &[&str], page: &Path) -> (bool, Vec<u8>, String) {
    let mut c = Command::new("chromium");
    c.args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()));
    let o = run_deadline(c, 30);
    (o.rc == 0, o.stdout.into_bytes(), o.stderr)
}

/// `daxlink demo --page-model all --json --report DIR`, which must succeed.
fn make_report(dir: &Path) -> Out {
    daxlink(&[
        &"demo",
        &"--page-model",
        &"all",
        &"--json",
        &"--report",
        &dir,
    ])
}

/// The parsed page (see `PARSE`).
fn parse_page(page: &Path) -> Value {
    let parsed = Command::new("python3")
        .args(["-c", PARSE])
        .arg(page)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "the page is not well-formed: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).unwrap()
}

#[test]
fn report_is_wellformed_complete_and_renders_in_chromium() {
    need("python3");
    need("chromium");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let out = make_report(&dir);
    let stderr = &out.stderr;
    let page = dir.join("index.html");
    assert!(
        stderr.contains(&format!("report: {}", page.display())),
        "{stderr}"
    );

    // --json keeps its format: demo.json is the same document plus "frames".
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap();
    assert_eq!(printed["ok"], data["ok"]);
    let (pr, dr) = (
        printed["results"].as_array().unwrap(),
        data["results"].as_array().unwrap(),
    );
    assert_eq!(pr.len(), 27);
    assert_eq!(dr.len(), 27);
    for (p, d) in pr.iter().zip(dr) {
        let mut d = d.clone();
        let frames = d.as_object_mut().unwrap().remove("frames").unwrap();
        assert_eq!(p, &d);
        assert!(p.get("frames").is_none());
        let frames = frames.as_array().unwrap();
        let steps = p["steps"].as_array().unwrap();
        assert_eq!(frames.len(), steps.len(), "{}", p["scenario"]);
        for f in frames {
            assert!(f["state"]["blocks"].is_array(), "a step without state: {f}");
        }
    }

    // The page parses as XML, and each scenario x model has its pictures.
    let v = parse_page(&page);
    assert!(v["title"].as_str().unwrap().contains("pinning problem"));
    let cells = v["cells"].as_array().unwrap();
    for r in dr {
        let (sc, model) = (
            r["scenario"].as_str().unwrap(),
            r["model"].as_str().unwrap(),
        );
        let mine: Vec<&Value> = cells
            .iter()
            .filter(|c| c["scenario"] == sc && c["model"] == model)
            .collect();
        let frames = r["frames"].as_array().unwrap();
        assert_eq!(mine.len(), frames.len(), "{sc} {model}: one cell per step");
        let mut marked: BTreeSet<u64> = BTreeSet::new();
        for (c, f) in mine.iter().zip(frames) {
            assert_eq!(c["pictures"], 1, "{sc} {model} step {}", c["step"]);
            let breaks: Vec<String> = f["breaks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.to_string())
                .collect();
            assert_eq!(c["breaks"].as_str().unwrap(), breaks.join(","));
            assert_eq!(c["marked"], !breaks.is_empty(), "{sc} {model}");
            assert_eq!(c["why"], u64::from(!breaks.is_empty()), "{sc} {model}");
            assert_eq!(c["stopped"], f["stopped"]);
            if c["marked"] == true {
                marked.extend(
                    f["breaks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| b.as_u64().unwrap()),
                );
            }
        }
        // Marked where the table says it breaks: the marked steps' invariants
        // are exactly the scenario's broken ones.
        let violated: BTreeSet<u64> = r["violated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        assert_eq!(marked, violated, "{sc} {model}");
        assert_eq!(
            r["outcome"] == "corrupted",
            !marked.is_empty(),
            "{sc} {model}"
        );
        if r["outcome"] == "blocked" || r["outcome"] == "refused" {
            assert!(mine.iter().any(|c| c["stopped"] == true), "{sc} {model}");
        }
    }
    let outcomes: Vec<&str> = v["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"]
        .iter()
        .flat_map(|s| {
            ["legacy", "upstream", "proxy"].map(|m| {
                dr.iter()
                    .find(|r| r["scenario"] == *s && r["model"] == m)
                    .unwrap()["outcome"]
                    .as_str()
                    .unwrap()
            })
        })
        .collect();
    assert_eq!(outcomes, expected, "the summary table is the results");

    // Headless Chromium renders it: exit 0, a PNG, and the whole DOM.
    let t0 = Instant::now();
    let shot = tmp.path().join("shot.png");
    let (ok, _, err) = chromium(
        tmp.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,2000",
        ],
        &page,
    );
    assert!(ok, "chromium --screenshot failed: {err}");
    let png = std::fs::read(&shot).expect("no screenshot");
    assert!(png.len() > 10_000, "screenshot of {} bytes", png.len());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let (ok, dom, err) = chromium(tmp.path(), &["--dump-dom"], &page);
    assert!(ok, "chromium --dump-dom failed: {err}");
    let dom = String::from_utf8_lossy(&dom);
    assert!(dom.contains("End of the report."), "the DOM was cut short");
    assert_eq!(dom.matches("class=\"pic\"").count(), cells.len());
    assert!(
        !err.contains(":CONSOLE("),
        "the page logged to the console: {err}"
    );
    println!("chromium: {:?} for both renders", t0.elapsed());
}

/// The SNAPSHOT ioctl behind the pictures: what it reports on a mount, that
/// it is refused to an unprivileged caller (it shows every file's mapping),
/// and that a request naming too many blocks is refused.
#[test]
fn snapshot_ioctl_reports_state_and_is_root_only() {
    let img = Image::new("report-snapshot", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    std::fs::write(m.path("a"), vec![b'a'; 8192]).unwrap();
    daxlink::tools::client::reflink(&m.path("a"), &m.path("b"), 0, 0, 0).unwrap();
    std::fs::set_permissions(
        m.path("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let s = daxlink::tools::client::snapshot(m.root(), &[]).unwrap();
    assert_eq!(s["model"], "proxy");
    let files = s["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let blocks = s["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "{s}");
    for b in blocks {
        assert_eq!(b["owners"].as_array().unwrap().len(), 2);
        assert_eq!(b["refcount"], 2);
        assert_eq!(b["head"], "aaaa");
    }
    assert!(s["violated"].as_array().unwrap().is_empty());

    // More than SNAPSHOT_EXTRA_MAX blocks: EINVAL from the daemon.
    let f = std::fs::File::open(m.root()).unwrap();
    let mut buf = vec![0u8; daxlink::fuse::ioctl::SNAPSHOT_SIZE];
    daxlink::fuse::ioctl::put_u64(
        &mut buf,
        0,
        daxlink::fuse::ioctl::SNAPSHOT_EXTRA_MAX as u64 + 1,
    );
    let e =
        daxlink::fuse::ioctl::call(&f, daxlink::fuse::ioctl::Cmd::SNAPSHOT, &mut buf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));

    // Not root: EPERM.
    let py = "/usr/bin/python3";
    assert!(
        Path::new(py).exists(),
        "python3 is missing (scripts/test.sh installs it)"
    );
    let script = format!(
        "{py} -c 'import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\ntry:\n    fcntl.ioctl(fd, {cmd}, bytearray({size}))\nexcept OSError as e:\n    sys.exit(\"errno %d\" % e.errno)' {path}",
        cmd = daxlink::fuse::ioctl::SNAPSHOT,
        size = daxlink::fuse::ioctl::SNAPSHOT_SIZE,
        path = m.path("a").display()
    );
    let (rc, err) = run_as(65534, 65534, &script);
    assert_ne!(rc, 0);
    assert!(
        err.contains(&format!("errno {}", libc::EPERM)),
        "rc {rc}: {err}"
    );
}

/// A PNG's width, height and RGB rows (8-bit RGB or RGBA, not interlaced:
/// what Chromium writes), decoded with flate2.
fn decode_png(png: &[u8]) -> (usize, usize, Vec<Vec<[u8; 3]>>) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (mut w, mut h, mut ct, mut idat) = (0usize, 0usize, 0u8, Vec::new());
    let mut i = 8;
    while i + 8 <= png.len() {
        let n = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let (t, c) = (&png[i + 4..i + 8], &png[i + 8..i + 8 + n]);
        match t {
            b"IHDR" => {
                w = u32::from_be_bytes(c[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(c[4..8].try_into().unwrap()) as usize;
                assert_eq!(c[8], 8, "bit depth");
                ct = c[9];
                assert_eq!(c[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(c),
            _ => {}
        }
        i += 12 + n;
    }
    let bpp = match ct {
        2 => 3,
        6 => 4,
        _ => panic!("PNG colour type {ct}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * bpp;
    let mut prev = vec![0u8; stride];
    let mut rows = Vec::with_capacity(h);
    for y in 0..h {
        let o = y * (stride + 1);
        let f = raw[o];
        let mut line = raw[o + 1..o + 1 + stride].to_vec();
        for x in 0..stride {
            let a = if x >= bpp { line[x - bpp] as i32 } else { 0 };
            let b = prev[x] as i32;
            let c = if x >= bpp { prev[x - bpp] as i32 } else { 0 };
            let add = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                _ => panic!("PNG filter {f}"),
            };
            line[x] = (line[x] as i32 + add) as u8;
        }
        rows.push(
            line.chunks(bpp)
                .map(|p| [p[0], p[1], p[2]])
                .collect::<Vec<_>>(),
        );
        prev = line;
    }
    (w, h, rows)
}

/// Does the screenshot show a horizontal scrollbar? Chromium draws one
/// along the bottom of the window when the page is wider than the window:
/// the bottom row is then the scrollbar's track colour (the colour of the
/// always-present vertical scrollbar's track, right edge, halfway down, on
/// a page many screens tall) almost all the way across.
fn horizontal_scrollbar(png: &[u8]) -> bool {
    let (w, h, rows) = decode_png(png);
    let track = rows[h / 2][w - 4];
    let bottom = &rows[h - 1][..w - 20];
    let same = bottom.iter().filter(|p| **p == track).count();
    same * 100 >= bottom.len() * 95
}

/// A newcomer reads the page at 1,280 px and on a narrow screen (600 px:
/// the three model columns stacked). The page used to need about 1,590 px
/// (a fixed 490 px cell per model, 480 px pictures, a 960 px legend), so
/// at 1,280 px Chromium showed a horizontal scrollbar with the proxy column
/// cut off. The check is a real layout: a screenshot with scrollbars shown,
/// its width the window's, and no horizontal scrollbar in it (first made
/// sure to be detectable on a page known to be too wide).
#[test]
fn report_fits_1280_and_600_pixels_without_horizontal_scrolling() {
    need("chromium");
    let tmp = tempfile::tempdir().unwrap();
    // The detector sees a scrollbar where there is one.
    let wide = tmp.path().join("wide.html");
    std::fs::write(
        &wide,
        "<html><body><div style=\"width:1590px;height:4000px\">wide</div></body></html>",
    )
    .unwrap();
    let shot = tmp.path().join("wide.png");
    let (ok, _, err) = chromium_raw(
        tmp.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
        ],
        &wide,
    );
    assert!(ok, "{err}");
    assert!(
        horizontal_scrollbar(&std::fs::read(&shot).unwrap()),
        "the scrollbar detector missed a 1590 px page at 1280 px"
    );
    let dir = tmp.path().join("r");
    make_report(&dir);
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for width in [1280, 600] {
        let shot = tmp.path().join(format!("shot-{width}.png"));
        let (ok, _, err) = chromium_raw(
            tmp.path(),
            &[
                &format!("--screenshot={}", shot.display()),
                &format!("--window-size={width},900"),
            ],
            &page,
        );
        assert!(ok, "chromium at {width} px: {err}");
        let png = std::fs::read(&shot).unwrap();
        let (w, _, _) = decode_png(&png);
        assert_eq!(w, width);
        assert!(
            !horizontal_scrollbar(&png),
            "at {width} px the page scrolls sideways"
        );
    }
    // How: the pictures and the legend shrink with their column, and a
    // narrow window stacks the models.
    assert!(html.contains("svg.pic { display: block; width: 100%;"));
    assert!(html.contains("@media (max-width: 1100px)"));
}

/// Every step says, in one sentence, what it did; labels are plain English
/// (no Rust debug lists such as ["B", "C"]); the jargon the pictures use is
/// in a glossary; and where upstream refused a layout change the scenario
/// goes on to the unpin and the change succeeding, so no upstream column
/// ends on a refusal with the pin still held.
#[test]
fn every_step_has_a_sentence_plain_labels_glossary_and_upstream_finishes() {
    need("python3");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    make_report(&dir);
    let v = parse_page(&dir.join("index.html"));
    let cells = v["cells"].as_array().unwrap();
    assert!(cells.len() > 100, "{} cells", cells.len());
    for c in cells {
        let at = format!("{} {} step {}", c["scenario"], c["model"], c["step"]);
        assert_eq!(c["say"], 1, "{at}: one sentence per step");
        let label = c["label"].as_str().unwrap();
        assert!(
            !label.contains('[') && !label.contains('"'),
            "{at}: debug formatting in the label {label:?}"
        );
    }
    let s7 = cells
        .iter()
        .find(|c| c["scenario"] == "S7" && c["model"] == "legacy" && c["step"] == 3)
        .unwrap();
    assert!(
        s7["label"]
            .as_str()
            .unwrap()
            .starts_with("A gets EIO; B and C read bad data silently"),
        "{s7}"
    );
    let glossary: Vec<&str> = v["glossary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for term in [
        "flags: dynamic",
        "(refcount record)",
        "pin bias of 1024",
        "FOLL_WRITE",
    ] {
        assert!(glossary.contains(&term), "{term} not in {glossary:?}");
    }
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap();
    for r in data["results"].as_array().unwrap() {
        if r["model"] != "upstream" {
            continue;
        }
        let frames = r["frames"].as_array().unwrap();
        let last = frames.last().unwrap();
        let sc = &r["scenario"];
        assert_ne!(r["outcome"], "corrupted", "{sc}");
        assert_eq!(last["stopped"], false, "{sc}: ends on the refusal");
        assert_eq!(
            last["state"]["pins"],
            serde_json::json!([]),
            "{sc}: a pin left"
        );
        if r["outcome"] == "blocked" {
            let stop = frames.iter().position(|f| f["stopped"] == true).unwrap();
            assert!(
                frames.len() >= stop + 3,
                "{sc}: no unpin and retried operation after the refusal"
            );
        }
    }
}
