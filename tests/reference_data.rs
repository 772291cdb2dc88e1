//! Reference data in a real MongoDB-wire server (SecantusDB): the load behind
//! `sluice reference load`, lookups through `MongoLookup`, outages, and the embedded
//! JSON-lines default answering as MongoDB does.
//!
//! Each test starts its own server (tests/support/secantus.rs) and loads data from the
//! reference generator.

#[path = "support/secantus.rs"]
mod secantus;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use secantus::Secantus;
use sluice_connectors::mongo::{MongoClient, MongoConfig, MongoLookup};
use sluice_engine::lookup::{Lookup, LookupCache, LookupCacheConfig};
use sluice_topologies::enrichment::reference::{DATABASE, DRUG_COLLECTION, FORMULARY_COLLECTION};
use sluice_topologies::enrichment::reference_generator::PLANS;
use sluice_topologies::enrichment::reference_store::{DRUG_INDEX, FORMULARY_INDEX};
use sluice_topologies::enrichment::{
    FormularyKey, ReferenceData, ReferenceGenerator, ReferenceSource, drug_reference_lookup,
    formulary_lookup, load_reference, reference_lookups,
};

/// Generated reference data and its files, removed on drop.
struct Files {
    dir: PathBuf,
    data: ReferenceData,
}

impl Files {
    fn generate(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sluice-refdata-{name}-{}", std::process::id()));
        let data = ReferenceGenerator::new(11).with_patients(100).generate();
        data.write_json_lines(&dir)
            .expect("write the reference files");
        Self { dir, data }
    }

    fn drugs(&self) -> PathBuf {
        self.dir.join("drug_reference.jsonl")
    }

    fn formulary(&self) -> PathBuf {
        self.dir.join("formulary.jsonl")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client with room for a server slowed down by parallel builds and tests: the load
/// and the lookups that must succeed go through it.
async fn patient_client(server: &Secantus) -> MongoClient {
    MongoConfig::new(server.uri())
        .unwrap()
        .with_server_selection_timeout(Duration::from_secs(20))
        .with_request_timeout(Duration::from_secs(120))
        .connect()
        .await
        .expect("a valid URI")
}

/// Short timeouts, so an outage shows within a second.
async fn impatient_client(server: &Secantus) -> MongoClient {
    MongoConfig::new(server.uri())
        .unwrap()
        .with_server_selection_timeout(Duration::from_millis(800))
        .with_connect_timeout(Duration::from_millis(800))
        .with_request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("a valid URI")
}

async fn loaded(name: &str) -> (Secantus, MongoClient, Files) {
    let server = Secantus::start();
    let client = patient_client(&server).await;
    let files = Files::generate(name);
    load_reference(&client, &files.drugs(), &files.formulary())
        .await
        .expect("the generated files load");
    (server, client, files)
}

fn key(plan: &str, ndc: &str) -> FormularyKey {
    FormularyKey {
        plan_id: plan.to_string(),
        ndc: ndc.to_string(),
    }
}

#[tokio::test]
async fn a_loaded_drug_is_found_by_its_ndc_and_an_absent_one_is_none() {
    let (_server, client, files) = loaded("found").await;
    let drugs = drug_reference_lookup(&client);

    let expected = &files.data.drugs[0];
    assert_eq!(
        drugs.lookup(&expected.ndc).await,
        Ok(Some(expected.clone()))
    );
    // An order NDC left out of the reference on purpose: an answer, not an error.
    let absent = &files.data.absent_order_ndcs[0];
    assert_eq!(drugs.lookup(absent).await, Ok(None));

    let formulary = formulary_lookup(&client);
    let row = &files.data.formulary[0];
    assert_eq!(
        formulary.lookup(&key(&row.plan_id, &row.ndc)).await,
        Ok(Some(row.clone()))
    );
    assert_eq!(
        formulary.lookup(&key("PLAN-NONE", &row.ndc)).await,
        Ok(None)
    );
}

#[tokio::test]
async fn the_load_creates_unique_indexes_on_the_lookup_keys() {
    let (_server, client, files) = loaded("indexes").await;
    let drug_indexes = client.index_names(DATABASE, DRUG_COLLECTION).await.unwrap();
    assert!(
        drug_indexes.iter().any(|n| n == DRUG_INDEX),
        "{drug_indexes:?}"
    );
    let formulary_indexes = client
        .index_names(DATABASE, FORMULARY_COLLECTION)
        .await
        .unwrap();
    assert!(
        formulary_indexes.iter().any(|n| n == FORMULARY_INDEX),
        "{formulary_indexes:?}"
    );

    // Unique: a second document for a loaded NDC is refused by the server.
    let collection = client
        .driver()
        .database(DATABASE)
        .collection::<mongodb::bson::Document>(DRUG_COLLECTION);
    let duplicate = collection
        .insert_one(doc! { "ndc": &files.data.drugs[0].ndc })
        .await;
    assert!(duplicate.is_err(), "a duplicate NDC was stored");
}

#[tokio::test]
async fn loading_the_same_files_twice_upserts_and_changes_nothing() {
    let (_server, client, files) = loaded("twice").await;
    let drugs = files.data.drugs.len() as u64;
    let rows = files.data.formulary.len() as u64;
    assert_eq!(client.count(DATABASE, DRUG_COLLECTION).await, Ok(drugs));
    assert_eq!(client.count(DATABASE, FORMULARY_COLLECTION).await, Ok(rows));

    let again = load_reference(&client, &files.drugs(), &files.formulary())
        .await
        .unwrap();
    assert_eq!((again.drugs.inserted, again.drugs.matched), (0, drugs));
    assert_eq!(
        (again.formulary.inserted, again.formulary.matched),
        (0, rows)
    );
    assert_eq!(client.count(DATABASE, DRUG_COLLECTION).await, Ok(drugs));
    assert_eq!(client.count(DATABASE, FORMULARY_COLLECTION).await, Ok(rows));
}

#[tokio::test]
async fn a_killed_server_is_a_transient_error_and_lookups_recover_after_restart() {
    let (mut server, _, files) = loaded("outage").await;
    let drugs = drug_reference_lookup(&impatient_client(&server).await);
    let ndc = files.data.drugs[1].ndc.clone();
    assert!(drugs.lookup(&ndc).await.unwrap().is_some());

    server.kill();
    let error = drugs.lookup(&ndc).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.message().contains("reference.drug_reference"),
        "{error}"
    );
    assert!(!error.message().contains(&ndc), "the key leaked: {error}");

    // Same port, same data directory: the client finds it again by itself.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        match drugs.lookup(&ndc).await {
            Ok(found) => break found,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no recovery after the restart: {e}"),
        }
    };
    assert_eq!(found.as_ref(), Some(&files.data.drugs[1]));
}

#[tokio::test]
async fn a_document_that_does_not_fit_is_a_permanent_error_naming_the_field() {
    let (_server, client, _files) = loaded("misfit").await;
    let collection = client
        .driver()
        .database(DATABASE)
        .collection::<mongodb::bson::Document>(FORMULARY_COLLECTION);
    collection
        .insert_one(doc! {
            "planId": "PLAN-X", "ndc": "00000000001", "tier": "pt-00042",
            "status": "preferred", "priorAuthRequired": false, "stepTherapy": false,
            "quantityLimit": null,
        })
        .await
        .unwrap();
    let error = formulary_lookup(&client)
        .lookup(&key("PLAN-X", "00000000001"))
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let message = error.message();
    assert!(message.contains("reference.formulary"), "{message}");
    assert!(message.contains("field `tier`"), "{message}");
    assert!(!message.contains("pt-00042"), "the value leaked: {message}");
}

#[tokio::test]
async fn the_embedded_files_answer_as_mongodb_does_for_the_same_data() {
    let (_server, client, files) = loaded("same").await;
    // The two sources a worker picks between by whether mongodb.uri is set.
    let embedded = reference_lookups(None, &files.dir).await.unwrap();
    let mongo = reference_lookups(Some(client.config()), &files.dir)
        .await
        .unwrap();
    assert!(matches!(embedded.source, ReferenceSource::Files { .. }));
    assert!(matches!(mongo.source, ReferenceSource::Mongo { .. }));

    let mut ndcs: Vec<String> = files.data.drugs.iter().map(|d| d.ndc.clone()).collect();
    ndcs.extend(files.data.absent_order_ndcs.iter().cloned());
    ndcs.push("99999999999".to_string());
    for ndc in &ndcs {
        assert_eq!(
            embedded.drugs.lookup(ndc).await,
            mongo.drugs.lookup(ndc).await,
            "NDC {ndc}"
        );
    }

    let mut present_absent = (0, 0);
    for (plan, _, _) in PLANS {
        for ndc in ndcs.iter().step_by(7) {
            let from_file = embedded.formulary.lookup(&key(plan, ndc)).await;
            assert_eq!(
                from_file,
                mongo.formulary.lookup(&key(plan, ndc)).await,
                "{plan} {ndc}"
            );
            match from_file.unwrap() {
                Some(_) => present_absent.0 += 1,
                None => present_absent.1 += 1,
            }
        }
    }
    assert!(
        present_absent.0 > 0 && present_absent.1 > 0,
        "formulary keys present and absent both compared: {present_absent:?}"
    );
}

#[tokio::test]
async fn through_the_cache_the_second_lookup_is_a_hit_and_survives_an_outage() {
    let (mut server, _, files) = loaded("cache").await;
    let cache = LookupCache::new(
        "drug-reference",
        drug_reference_lookup(&impatient_client(&server).await),
        LookupCacheConfig::default(),
    );
    let ndc = &files.data.drugs[2].ndc;
    let first = cache.get(ndc).await.unwrap();
    assert_eq!(cache.get(ndc).await.unwrap(), first);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.calls), (1, 1, 1));

    // MongoDB down: the cached NDC is still served, an uncached one is a transient error.
    server.kill();
    assert_eq!(cache.get(ndc).await.unwrap(), first);
    let other = &files.data.drugs[3].ndc;
    assert!(cache.get(other).await.unwrap_err().is_transient());
}

/// A lookup by a scalar field for any value type: here a projection of the document.
#[tokio::test]
async fn a_lookup_reads_only_the_fields_its_value_type_names() {
    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Price {
        average_wholesale_price: f64,
    }
    let (_server, client, files) = loaded("projection").await;
    let prices: MongoLookup<String, Price> =
        MongoLookup::by_field(&client, DATABASE, DRUG_COLLECTION, "ndc");
    let drug = &files.data.drugs[4];
    assert_eq!(
        prices.lookup(&drug.ndc).await,
        Ok(Some(Price {
            average_wholesale_price: drug.average_wholesale_price
        }))
    );
}

fn sluice(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_generates_files_and_loads_them_with_upserts() {
    let server = Secantus::start();
    let dir = std::env::temp_dir().join(format!("sluice-refdata-cli-{}", std::process::id()));
    let out = sluice(&[
        "reference",
        "generate",
        "--out",
        path(&dir),
        "--seed",
        "3",
        "--patients",
        "500",
    ]);
    assert!(out.contains("  2000 drugs "), "{out}");
    let drugs = dir.join("drug_reference.jsonl");
    let formulary = dir.join("formulary.jsonl");
    let coverage = std::fs::read_to_string(dir.join("patient_coverage.jsonl")).unwrap();
    assert!(coverage.lines().count() > 450, "about 97% of 500 patients");

    let load = [
        "reference",
        "load",
        "--mongodb-uri",
        &server.uri(),
        "--drugs",
        path(&drugs),
        "--formulary",
        path(&formulary),
    ];
    let first = sluice(&load);
    assert!(
        first.contains("reference.drug_reference: 2000 upserted (2000 new"),
        "{first}"
    );
    let second = sluice(&load);
    assert!(
        second
            .contains("reference.drug_reference: 2000 upserted (0 new, 2000 replaced, 0 changed)"),
        "{second}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
