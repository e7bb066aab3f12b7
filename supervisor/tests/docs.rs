//! The man pages and shell completions the build script generates: one page
//! per subcommand, and completions that offer profile names.

use std::path::Path;
use std::process::Command;

const OUT: &str = env!("OUT_DIR");

#[test]
fn a_man_page_for_pallium_and_each_subcommand() {
    let man = Path::new(OUT).join("man");
    for page in [
        "pallium",
        "pallium-run",
        "pallium-exec",
        "pallium-shell",
        "pallium-stop",
        "pallium-list",
        "pallium-check",
        "pallium-audit",
        "pallium-cp",
        "pallium-mv",
    ] {
        let text = std::fs::read_to_string(man.join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.contains(".TH"), "{page}.1 is not a man page");
    }
}

#[test]
fn completions_for_three_shells_offer_profile_names() {
    let comp = Path::new(OUT).join("completions");
    let zsh = std::fs::read_to_string(comp.join("_pallium")).unwrap();
    assert!(zsh.contains(":_pallium_profiles'") && zsh.contains("_pallium_profiles() {"));
    let fish = std::fs::read_to_string(comp.join("pallium.fish")).unwrap();
    assert!(fish.contains("(__pallium_profiles)"));
    // Bash is here: complete a profile name for real.
    let home = std::env::temp_dir().join(format!("pallium-comp-{}", std::process::id()));
    let profiles = home.join(".config/pallium/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("workvpn.json"), "{}").unwrap();
    let script = format!(
        "source {}; COMP_WORDS=(pallium exec -s 1 wo); COMP_CWORD=4; \
         _pallium_with_profiles pallium wo 1; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        comp.join("pallium").display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("run bash");
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "workvpn");
}
