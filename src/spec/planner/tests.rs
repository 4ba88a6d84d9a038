//! The rule planner's table: sentences and the exact jobs they plan; and
//! every planned directory validates.

use super::*;
use crate::spec::SourceFile;

const TZ: &str = "Asia/Jakarta";

fn opts() -> Options {
    Options {
        timezone: TZ.into(),
        ..Options::default()
    }
}

/// (id, type, schedule, channel, account); the zone is always [`TZ`].
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const TABLE: &[(&str, &[Row])] = &[
    ("Pantau telegram akun bot_a01 tiap 30 detik dan buat laporan harian jam 07:00", &[
        ("monitor-telegram-bot-a01", "monitor.channel", "every 30s", "telegram", "bot_a01"),
        ("laporan-harian-0700", "report.daily", "cron 0 7 * * *", "", ""),
    ]),
    ("Pantau whatsapp akun ops_01 tiap 45 detik dan buat laporan harian jam 08:00", &[
        ("monitor-whatsapp-ops-01", "monitor.channel", "every 45s", "whatsapp", "ops_01"),
        ("laporan-harian-0800", "report.daily", "cron 0 8 * * *", "", ""),
    ]),
    ("Monitor harga 100 produk di 5 marketplace tiap 5 menit", &[
        ("monitor-connectors", "monitor.channel", "every 5m", "", ""),
    ]),
    ("pantau tg tiap 1 menit", &[("monitor-telegram", "monitor.channel", "every 1m", "telegram", "")]),
    ("cek wa setiap 2 jam", &[("monitor-whatsapp", "monitor.channel", "every 2h", "whatsapp", "")]),
    ("heartbeat slack per 10 detik", &[("monitor-slack", "monitor.channel", "every 10s", "slack", "")]),
    ("cek koneksi gmail tiap jam", &[("monitor-email", "monitor.channel", "every 1h", "email", "")]),
    ("status telegram dan whatsapp tiap 30 detik", &[
        ("monitor-telegram", "monitor.channel", "every 30s", "telegram", ""),
        ("monitor-whatsapp", "monitor.channel", "every 30s", "whatsapp", ""),
    ]),
    ("monitor telegram account bot_b02 every 30 seconds", &[
        ("monitor-telegram-bot-b02", "monitor.channel", "every 30s", "telegram", "bot_b02"),
    ]),
    ("monitor slack every 5 minutes", &[("monitor-slack", "monitor.channel", "every 5m", "slack", "")]),
    ("check whatsapp every hour", &[("monitor-whatsapp", "monitor.channel", "every 1h", "whatsapp", "")]),
    ("monitor telegram every 30s", &[("monitor-telegram", "monitor.channel", "every 30s", "telegram", "")]),
    ("pantau telegram", &[("monitor-telegram", "monitor.channel", "every 1m", "telegram", "")]),
    ("pantau telegram tiap 5 menit senin-jumat", &[
        ("monitor-telegram", "monitor.channel", "cron */5 * * * 1-5", "telegram", ""),
    ]),
    ("monitor slack every 2 hours on weekdays", &[
        ("monitor-slack", "monitor.channel", "cron 0 */2 * * 1-5", "slack", ""),
    ]),
    ("buat laporan harian jam 07:00", &[("laporan-harian-0700", "report.daily", "cron 0 7 * * *", "", "")]),
    ("laporan harian jam 7 malam", &[("laporan-harian-1900", "report.daily", "cron 0 19 * * *", "", "")]),
    ("rekap jam 12 siang", &[("rekap-harian-1200", "report.daily", "cron 0 12 * * *", "", "")]),
    ("ringkasan pukul 3 sore", &[("ringkasan-harian-1500", "report.daily", "cron 0 15 * * *", "", "")]),
    ("laporan pukul 7:30 pagi", &[("laporan-harian-0730", "report.daily", "cron 30 7 * * *", "", "")]),
    ("laporan jam 2 malam", &[("laporan-harian-0200", "report.daily", "cron 0 2 * * *", "", "")]),
    ("laporan jam 12 malam", &[("laporan-harian-0000", "report.daily", "cron 0 0 * * *", "", "")]),
    ("laporan jam 07.30 ke email", &[("laporan-harian-0730", "report.daily", "cron 30 7 * * *", "email", "")]),
    ("daily report at 7pm", &[("report-daily-1900", "report.daily", "cron 0 19 * * *", "", "")]),
    ("report at 7:30am to slack", &[("report-daily-0730", "report.daily", "cron 30 7 * * *", "slack", "")]),
    ("report every monday at 09:00", &[("report-monday-0900", "report.daily", "cron 0 9 * * 1", "", "")]),
    ("summary on weekdays at 6 pm", &[("summary-weekdays-1800", "report.daily", "cron 0 18 * * 1-5", "", "")]),
    ("laporan setiap senin jam 9", &[("laporan-senin-0900", "report.daily", "cron 0 9 * * 1", "", "")]),
    ("laporan sabtu dan minggu jam 10 pagi", &[
        ("laporan-akhir-pekan-1000", "report.daily", "cron 0 10 * * 0,6", "", ""),
    ]),
    ("laporan senin sampai jumat pukul 17:00 kirim ke telegram dan email", &[
        ("laporan-senin-jumat-1700", "report.daily", "cron 0 17 * * 1-5", "telegram", ""),
    ]),
    ("laporan hari kerja jam 8", &[("laporan-senin-jumat-0800", "report.daily", "cron 0 8 * * 1-5", "", "")]),
    ("laporan tiap 6 jam", &[("laporan-tiap-6h", "report.daily", "every 6h", "", "")]),
    ("laporan", &[("laporan-harian-0700", "report.daily", "cron 0 7 * * *", "", "")]),
    ("backup harian jam 2 malam", &[("backup-harian-0200", "backup.export", "cron 0 2 * * *", "", "")]),
    ("cadangan setiap hari pukul 23:30", &[("cadangan-harian-2330", "backup.export", "cron 30 23 * * *", "", "")]),
    ("ekspor setiap minggu jam 1", &[("ekspor-minggu-0100", "backup.export", "cron 0 1 * * 0", "", "")]),
    ("backup every day at 1am", &[("backup-daily-0100", "backup.export", "cron 0 1 * * *", "", "")]),
    ("export weekend at 3am", &[("export-weekend-0300", "backup.export", "cron 0 3 * * 0,6", "", "")]),
    ("laporan tengah malam", &[("laporan-harian-0000", "report.daily", "cron 0 0 * * *", "", "")]),
    ("backup at noon on sunday", &[("backup-sunday-1200", "backup.export", "cron 0 12 * * 0", "", "")]),
    ("backup", &[("backup-daily-0200", "backup.export", "cron 0 2 * * *", "", "")]),
    ("sinkron stok tiap 15 menit", &[("sinkron-tiap-15m", "agent.workflow", "every 15m", "", "")]),
    ("otomasi balasan wa jam 9 pagi", &[("otomasi-whatsapp-harian-0900", "agent.workflow", "cron 0 9 * * *", "whatsapp", "")]),
    ("workflow every 10 minutes", &[("workflow-every-10m", "agent.workflow", "every 10m", "", "")]),
    ("kirim pesan ke slack tiap 1 jam", &[("agent-slack-tiap-1h", "agent.workflow", "every 1h", "slack", "")]),
    ("integrasi crm", &[("integrasi", "agent.workflow", "none", "", "")]),
    ("pantau tg akun bot_a01 tiap 30 detik, laporan jam 07:00; backup jam 2 malam", &[
        ("monitor-telegram-bot-a01", "monitor.channel", "every 30s", "telegram", "bot_a01"),
        ("laporan-harian-0700", "report.daily", "cron 0 7 * * *", "", ""),
        ("backup-harian-0200", "backup.export", "cron 0 2 * * *", "", ""),
    ]),
    ("monitor telegram every minute and monitor telegram every 5 minutes", &[
        ("monitor-telegram", "monitor.channel", "every 1m", "telegram", ""),
        ("monitor-telegram-2", "monitor.channel", "every 5m", "telegram", ""),
    ]),
    ("monitor wa and report at 8am to email and backup at midnight", &[
        ("monitor-whatsapp", "monitor.channel", "every 1m", "whatsapp", ""),
        ("report-daily-0800", "report.daily", "cron 0 8 * * *", "email", ""),
        ("backup-daily-0000", "backup.export", "cron 0 0 * * *", "", ""),
    ]),
];

fn row(j: &PlannedJob) -> (String, String, String, String, String) {
    (
        j.id.clone(),
        j.job_type.to_string(),
        j.schedule_text(),
        j.channel.clone().unwrap_or_default(),
        j.account.clone().unwrap_or_default(),
    )
}

#[test]
fn the_table_plans_exactly_these_jobs() {
    assert!(TABLE.len() >= 40, "{} sentences", TABLE.len());
    let mut wrong = Vec::new();
    for (sentence, expected) in TABLE {
        let jobs = plan(sentence, &opts()).unwrap_or_else(|e| panic!("{sentence:?}: {e}"));
        let got: Vec<_> = jobs.iter().map(row).collect();
        let want: Vec<_> = expected
            .iter()
            .map(|r| (r.0.into(), r.1.into(), r.2.into(), r.3.into(), r.4.into()))
            .collect();
        if got != want {
            wrong.push(format!("{sentence:?}\n  got  {got:?}\n  want {want:?}"));
        }
        for j in &jobs {
            assert_eq!(j.timezone, TZ, "{sentence:?}");
            let yaml = j.yaml(sentence);
            let zone_line = format!("  timezone: \"{TZ}\"\n");
            assert_eq!(
                yaml.contains(&zone_line),
                j.schedule != Schedule::None,
                "{yaml}"
            );
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The four channels' connectors, as `multijob init` would have them.
const CONNECTORS: &str = "kind: Connector
id: telegram
provider: telegram
base_url: https://api.telegram.org
secrets: {bot_token: '${env:TELEGRAM_BOT_TOKEN}'}
config: {chat_id: '-100'}
---
kind: Connector
id: slack
provider: slack
base_url: https://slack.com/api
secrets: {bot_token: '${env:SLACK_BOT_TOKEN}'}
config: {channel: '#ops'}
---
kind: Connector
id: whatsapp
provider: whatsapp
base_url: https://graph.facebook.com/v21.0
secrets: {access_token: '${env:WHATSAPP_ACCESS_TOKEN}'}
config: {phone_number_id: '1', to: '+62'}
---
kind: Connector
id: email
provider: smtp
base_url: smtp://smtp.example:587
secrets: {username: '${env:SMTP_USERNAME}', password: '${env:SMTP_PASSWORD}'}
config: {from: 'ops@example.com', to: 'boss@example.com'}
";

#[test]
fn every_planned_directory_validates() {
    for (sentence, _) in TABLE {
        let jobs = plan(sentence, &opts()).unwrap_or_else(|e| panic!("{sentence:?}: {e}"));
        let mut files = vec![SourceFile {
            path: "jobs.d/connectors.yaml".into(),
            text: CONNECTORS.into(),
        }];
        files.extend(jobs.iter().map(|j| SourceFile {
            path: file_of(&j.id),
            text: j.yaml(sentence),
        }));
        let loaded = crate::spec::build(&files);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{sentence:?}:\n{}", errors.join("\n"));
        assert_eq!(loaded.snapshot.jobs.len(), jobs.len(), "{sentence:?}");
    }
}

#[test]
fn hostile_sentences_are_refused_clearly() {
    let long = "pantau telegram ".repeat(70_000);
    assert!(matches!(
        plan(&long, &opts()),
        Err(PlanError::TooLong { .. })
    ));
    assert!(matches!(
        plan("pantau telegram\ntiap 30 detik", &opts()),
        Err(PlanError::Control { ch: '\n', .. })
    ));
    assert!(matches!(plan("  , ; dan ", &opts()), Err(PlanError::Empty)));
    let meaningless = plan("halo apa kabar", &opts()).unwrap_err().to_string();
    assert!(meaningless.contains("examples:"), "{meaningless}");
    let quote = plan("pantau telegram akun bot\"a: b tiap 30 detik", &opts()).unwrap_err();
    assert!(quote.to_string().contains("account name"), "{quote}");
    let hour = plan("laporan jam 25", &opts()).unwrap_err().to_string();
    assert!(hour.contains("not an hour"), "{hour}");
    let huge = plan("pantau tg tiap 99999999999999999999 detik", &opts()).unwrap_err();
    assert!(huge.to_string().contains("longer than a year"), "{huge}");
    let year = plan("laporan every 400 days", &opts()).unwrap_err();
    assert!(year.to_string().contains("longer than a year"), "{year}");
    let zero = plan("pantau tg tiap 0 detik", &opts())
        .unwrap_err()
        .to_string();
    assert!(zero.contains("never fires"), "{zero}");
}

#[test]
fn sentence_quotes_and_hashes_stay_inside_their_scalars() {
    let sentence = "laporan jam 7 \"x\": #y' \\ ok";
    let jobs = plan(sentence, &opts()).unwrap();
    let yaml = jobs[0].yaml(sentence);
    let files = [SourceFile {
        path: file_of(&jobs[0].id),
        text: yaml.clone(),
    }];
    let loaded = crate::spec::build(&files);
    assert!(!loaded.has_errors(), "{yaml}\n{:?}", loaded.diagnostics);
    let job = &loaded.snapshot.jobs[&jobs[0].id].spec;
    assert_eq!(job.description.as_deref(), Some(jobs[0].part.as_str()));
}

#[test]
fn channel_and_account_flags_fill_what_the_sentence_leaves_out() {
    let with = Options {
        channel: Some("WA".into()),
        account: Some("ops_01".into()),
        connectors: vec![("wa-prod".into(), Provider::Whatsapp)],
        ..opts()
    };
    let jobs = plan("pantau tiap 30 detik dan pantau tg akun bot_a01", &with).unwrap();
    let rows: Vec<_> = jobs.iter().map(row).collect();
    assert_eq!(
        rows[0],
        row(&PlannedJob {
            id: "monitor-whatsapp-ops-01".into(),
            job_type: "monitor.channel",
            schedule: Schedule::Every("30s".into()),
            channel: Some("whatsapp".into()),
            account: Some("ops_01".into()),
            ..jobs[0].clone()
        })
    );
    // The directory's only WhatsApp connector is the one checked.
    assert_eq!(jobs[0].connectors, ["wa-prod"]);
    assert_eq!(rows[1].0, "monitor-telegram-bot-a01");
    assert_eq!(jobs[1].connectors, ["telegram"]);
    let bad = Options {
        channel: Some("pigeon".into()),
        ..opts()
    };
    let err = plan("pantau tiap 30 detik", &bad).unwrap_err().to_string();
    assert!(err.contains("--channel \"pigeon\": not a channel"), "{err}");
}
