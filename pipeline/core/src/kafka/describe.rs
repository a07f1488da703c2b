//! What `hunter topics describe` shows: per topic its partitions and offsets, its compaction and
//! record-size configs, and every consumer group that has committed offsets on it, with the
//! group's lag, so an operator sees the state of the pipeline in one command.
//!
//! Everything is read with clients outside any group (a consumer created with a group's id but
//! never subscribed reads that group's committed offsets without joining it, the way the lag
//! monitor does), so describing never causes a rebalance. Groups are Hunter's own (always
//! shown for their topic, also before they have committed anything) plus whatever the broker
//! lists (ListGroups), shown for every topic they have committed offsets on: downstream
//! consumers of the public topics appear with their lag too. A broker that cannot list groups
//! is not an error: the report says so and shows Hunter's groups.
//!
//! Not shown: the size on the broker's disk. librdkafka's admin API (and so rust-rdkafka) has no
//! DescribeLogDirs; the record count per partition (end offset minus start offset) is shown
//! instead.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use serde::Serialize;

use super::{KafkaContext, TopicSpec, base_config, create};
use crate::config::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One topic as the broker has it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicReport {
    pub name: String,
    /// False when the broker does not have the topic (`hunter migrate` creates it).
    pub exists: bool,
    pub partitions: Vec<PartitionReport>,
    /// `cleanup.policy` as the broker reports it (`compact`, `delete`), if it does.
    pub cleanup_policy: Option<String>,
    /// Whether Hunter wants the topic compacted (the contract).
    pub compaction_expected: bool,
    /// `max.message.bytes` as the broker reports it.
    pub max_message_bytes: Option<String>,
    pub groups: Vec<GroupReport>,
}

impl TopicReport {
    /// Records held: the sum of each partition's end offset minus its start offset.
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(|p| p.high - p.low).sum()
    }
}

/// One partition's offsets.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// The earliest offset still held (start offset).
    pub low: i64,
    /// The end offset (the next record's offset).
    pub high: i64,
}

/// A consumer group's position on one topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// Whether it is one of Hunter's own groups.
    pub hunter: bool,
    /// Committed offset per partition (`None`: nothing committed there).
    pub committed: Vec<(i32, Option<i64>)>,
    /// Records not yet committed: end offset minus the committed offset (minus the start
    /// offset where nothing is committed), summed over the partitions.
    pub lag: i64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub topics: Vec<TopicReport>,
    /// Why the broker's group list is missing from the report, when it is.
    pub group_list_error: Option<String>,
}

/// Describes `specs` (Hunter's topics) with `hunter_groups` (group id, topic name) and every
/// group the broker lists.
pub async fn describe(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
    hunter_groups: &[(String, String)],
) -> Result<Description, KafkaError> {
    let configs = topic_configs(settings, specs).await;
    let (settings, specs, hunter_groups) =
        (settings.clone(), specs.to_vec(), hunter_groups.to_vec());
    // librdkafka's metadata and offset calls block: not on the runtime's threads.
    tokio::task::spawn_blocking(move || offsets(&settings, &specs, &hunter_groups, configs))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

type Configs = Vec<(String, Option<String>, Option<String>)>;

fn offsets(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
    hunter_groups: &[(String, String)],
    configs: Configs,
) -> Result<Description, KafkaError> {
    let reader = group_reader(settings, "hunter-describe")?;
    let metadata = reader.fetch_metadata(None, TIMEOUT)?;
    // A client of its own: a broker without ListGroups may drop the connection (tansu 0.6.0
    // does), which must not disturb the reads above and below.
    let lister = group_reader(settings, "hunter-describe")?;
    let (listed, group_list_error) = match lister.fetch_group_list(None, TIMEOUT) {
        Ok(list) => (
            list.groups()
                .iter()
                .map(|g| g.name().to_owned())
                .collect::<BTreeSet<_>>(),
            None,
        ),
        Err(error) => (BTreeSet::new(), Some(error.to_string())),
    };

    let mut topics = Vec::new();
    for spec in specs {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == spec.name && t.error().is_none());
        let mut partitions = Vec::new();
        if let Some(found) = found {
            for partition in found.partitions() {
                let (low, high) = reader.fetch_watermarks(&spec.name, partition.id(), TIMEOUT)?;
                partitions.push(PartitionReport {
                    partition: partition.id(),
                    low,
                    high,
                });
            }
        }
        partitions.sort_by_key(|p| p.partition);
        let (cleanup_policy, max_message_bytes) = configs
            .iter()
            .find(|(name, _, _)| *name == spec.name)
            .map(|(_, cleanup, max)| (cleanup.clone(), max.clone()))
            .unwrap_or_default();

        let own: Vec<&String> = hunter_groups
            .iter()
            .filter(|(_, topic)| *topic == spec.name)
            .map(|(group, _)| group)
            .collect();
        let mut candidates: BTreeSet<&String> = listed.iter().collect();
        candidates.extend(own.iter().copied());
        let mut groups = Vec::new();
        if found.is_some() {
            for group in candidates {
                let hunter = own.contains(&group);
                let committed = committed(settings, group, &spec.name, &partitions)?;
                if !hunter && committed.iter().all(|(_, offset)| offset.is_none()) {
                    continue; // a group that never read this topic
                }
                let lag = partitions
                    .iter()
                    .map(|p| {
                        let from = committed
                            .iter()
                            .find(|(id, _)| *id == p.partition)
                            .and_then(|(_, offset)| *offset)
                            .unwrap_or(p.low);
                        (p.high - from).max(0)
                    })
                    .sum();
                groups.push(GroupReport {
                    group: group.clone(),
                    hunter,
                    committed,
                    lag,
                });
            }
        }
        topics.push(TopicReport {
            name: spec.name.clone(),
            exists: found.is_some(),
            partitions,
            cleanup_policy,
            compaction_expected: spec.compacted,
            max_message_bytes,
            groups,
        });
    }
    Ok(Description {
        topics,
        group_list_error,
    })
}

/// A consumer carrying `group_id` that never subscribes: it reads the group's committed offsets
/// without joining the group.
fn group_reader(
    settings: &KafkaSettings,
    group_id: &str,
) -> Result<BaseConsumer<KafkaContext>, KafkaError> {
    let mut config = base_config(settings);
    config
        .set("group.id", group_id)
        .set("client.id", "hunter-describe")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    create(
        config,
        settings,
        KafkaContext::new(settings, "hunter-describe"),
    )
}

fn committed(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &[PartitionReport],
) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let consumer = group_reader(settings, group)?;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, partition.partition);
    }
    let committed = consumer.committed_offsets(list, TIMEOUT)?;
    let mut offsets: Vec<(i32, Option<i64>)> = committed
        .elements()
        .iter()
        .map(|element| match element.offset() {
            rdkafka::Offset::Offset(offset) => (element.partition(), Some(offset)),
            _ => (element.partition(), None),
        })
        .collect();
    offsets.sort_by_key(|(partition, _)| *partition);
    Ok(offsets)
}

/// Whether `group` has committed an offset on any partition of `topic`, read without joining
/// the group (as the report reads it). A topic the broker does not have has none.
pub async fn has_committed(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<bool, KafkaError> {
    let (settings, group, topic) = (settings.clone(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let reader = group_reader(&settings, &group)?;
        let metadata = reader.fetch_metadata(Some(&topic), TIMEOUT)?;
        let partitions: Vec<PartitionReport> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions())
            .map(|p| PartitionReport {
                partition: p.id(),
                low: 0,
                high: 0,
            })
            .collect();
        let committed = committed(&settings, &group, &topic, &partitions)?;
        Ok(committed.iter().any(|(_, offset)| offset.is_some()))
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// (topic, cleanup.policy, max.message.bytes) for every topic the broker describes; topics it
/// cannot describe are left out (the report shows them without configs).
async fn topic_configs(settings: &KafkaSettings, specs: &[TopicSpec]) -> Configs {
    let mut config = base_config(settings);
    config.set("client.id", "hunter-describe");
    let Ok(admin) = create::<_, AdminClient<KafkaContext>>(
        config,
        settings,
        KafkaContext::new(settings, "hunter-describe"),
    ) else {
        return Vec::new();
    };
    let resources: Vec<ResourceSpecifier> = specs
        .iter()
        .map(|spec| ResourceSpecifier::Topic(&spec.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let Ok(described) = admin.describe_configs(&resources, &options).await else {
        return Vec::new();
    };
    described
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|resource| {
            let name = match &resource.specifier {
                rdkafka::admin::OwnedResourceSpecifier::Topic(name) => name.clone(),
                _ => return None,
            };
            let value = |key: &str| {
                resource
                    .entries
                    .iter()
                    .find(|entry| entry.name == key)
                    .and_then(|entry| entry.value.clone())
            };
            Some((name, value("cleanup.policy"), value("max.message.bytes")))
        })
        .collect()
}

/// The report as an operator reads it: one block per topic.
pub fn render(description: &Description) -> String {
    let mut out = String::new();
    for topic in &description.topics {
        if !topic.exists {
            out.push_str(&format!(
                "{}\n  missing on the broker: run `hunter migrate`\n\n",
                topic.name
            ));
            continue;
        }
        let compaction = match (&topic.cleanup_policy, topic.compaction_expected) {
            (Some(policy), true) if policy.contains("compact") => "compacted".to_owned(),
            (Some(policy), true) => {
                format!("cleanup.policy={policy} (NOT compacted: Hunter expects compaction)")
            }
            (Some(policy), false) => format!("cleanup.policy={policy}"),
            (None, true) => "compaction expected; the broker does not report it".to_owned(),
            (None, false) => "cleanup.policy not reported".to_owned(),
        };
        out.push_str(&format!(
            "{}\n  {} partitions, {} records, {}, max.message.bytes {}\n",
            topic.name,
            topic.partitions.len(),
            topic.records(),
            compaction,
            topic.max_message_bytes.as_deref().unwrap_or("not reported"),
        ));
        let offsets: Vec<String> = topic
            .partitions
            .iter()
            .map(|p| format!("{}: {}..{}", p.partition, p.low, p.high))
            .collect();
        out.push_str(&format!("  offsets (start..end) {}\n", offsets.join(", ")));
        if topic.groups.is_empty() {
            out.push_str("  no consumer group has committed offsets here\n");
        }
        for group in &topic.groups {
            let committed: Vec<String> = group
                .committed
                .iter()
                .map(|(partition, offset)| match offset {
                    Some(offset) => format!("{partition}: {offset}"),
                    None => format!("{partition}: -"),
                })
                .collect();
            out.push_str(&format!(
                "  group {}{}: lag {} (committed {})\n",
                group.group,
                if group.hunter { "" } else { " (not Hunter's)" },
                group.lag,
                committed.join(", ")
            ));
        }
        out.push('\n');
    }
    if let Some(error) = &description.group_list_error {
        out.push_str(&format!(
            "note: the broker did not list its consumer groups ({error}); only Hunter's groups \
             are shown\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(groups: Vec<GroupReport>, cleanup: Option<&str>) -> TopicReport {
        TopicReport {
            name: "hunter.leads.v1".into(),
            exists: true,
            partitions: vec![
                PartitionReport {
                    partition: 0,
                    low: 0,
                    high: 10,
                },
                PartitionReport {
                    partition: 1,
                    low: 5,
                    high: 7,
                },
            ],
            cleanup_policy: cleanup.map(str::to_owned),
            compaction_expected: true,
            max_message_bytes: Some("1048576".into()),
            groups,
        }
    }

    #[test]
    fn the_report_shows_records_groups_and_a_topic_that_is_not_compacted() {
        let group = GroupReport {
            group: "hunter-sink-leads".into(),
            hunter: true,
            committed: vec![(0, Some(8)), (1, None)],
            lag: 4,
        };
        let description = Description {
            topics: vec![topic(vec![group], Some("delete"))],
            group_list_error: Some("Broker: unsupported".into()),
        };
        assert_eq!(description.topics[0].records(), 12);
        let text = render(&description);
        assert!(text.contains("2 partitions, 12 records"), "{text}");
        assert!(text.contains("NOT compacted"), "{text}");
        assert!(text.contains("group hunter-sink-leads: lag 4 (committed 0: 8, 1: -)"));
        assert!(text.contains("only Hunter's groups are shown"), "{text}");
    }

    #[test]
    fn a_missing_topic_says_how_to_create_it() {
        let mut missing = topic(vec![], Some("compact"));
        missing.exists = false;
        let text = render(&Description {
            topics: vec![missing],
            group_list_error: None,
        });
        assert!(text.contains("run `hunter migrate`"), "{text}");
    }
}
