//! The simulated writer over real HTTP: routing (schema name or facts block, with or without
//! an image), determinism under concurrency, re-asks, mistakes and their log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use dftg_core::llava::InstructionType;
use dftg_core::truth::{ImageTruth, ObjectTruth};
use dftg_core::writer::{facts_block, parse_reply, reply_schema, schema_name, FactAttribute, FactObject, Facts, ReplyError};
use dftg_model::api::{ChatMessage, ChatRequest, ChatResponse, ContentPart, ImageUrl, MessageContent};
use dftg_model::sim::{
    self, profile_by_name, SimConfig, SimCorpus, SimHandle, SimWriterConfig, WriterLogEntry, WriterMistake, MAX_REQUEST_ID_CHARS,
    WRITER_LOG_FILE,
};
use futures::StreamExt;

fn truth(i: usize) -> ImageTruth {
    let colour = ["red", "blue", "orange", "white"][i % 4];
    let mut attrs = BTreeMap::new();
    attrs.insert("color".to_string(), vec![colour.to_string()]);
    let objects = vec![
        ObjectTruth { name: ["dog", "cat", "horse", "sheep"][i % 4].into(), count: Some(1 + (i % 3) as u32), attributes: attrs.clone() },
        ObjectTruth { name: ["frisbee", "bench", "car", "knife"][i % 4].into(), count: Some(1 + (i % 2) as u32), attributes: attrs },
        ObjectTruth { name: "person".into(), count: if i.is_multiple_of(5) { None } else { Some(2) }, attributes: BTreeMap::new() },
    ];
    ImageTruth { image: format!("img{i}"), file: None, objects }
}

fn facts(i: usize) -> Facts {
    let t = truth(i);
    let kind = InstructionType::ALL[i % InstructionType::ALL.len()];
    let objects: Vec<FactObject> = t.objects.iter().map(|o| FactObject::from_truth(o, o.name.clone())).collect();
    let absent = ["giraffe", "toilet", "airplane", "clock"][i % 4].to_string();
    let first = &t.objects[0];
    let mut f = Facts {
        target: Some(first.name.clone()),
        target_present: Some(true),
        target_count: first.count,
        absent: vec![absent.clone()],
        avoid: if i.is_multiple_of(2) { vec![format!("Is there a {absent} in this image?")] } else { vec![] },
        turns: Some(2 + (i % 4) as u32),
        ..Facts::new(kind, objects)
    };
    match kind {
        InstructionType::NegativeExistence | InstructionType::FalsePremise => {
            f.target = Some(absent);
            f.target_present = Some(false);
            f.target_count = None;
        }
        InstructionType::Attribute => {
            f.target_attribute = Some(FactAttribute { family: "color".into(), values: first.attributes["color"].clone() })
        }
        InstructionType::CorrectedDescription => {
            f.target = None;
            f.target_present = None;
            f.draft = Some(format!("A photo of a {} on the grass.", t.objects[1].name));
        }
        _ => {}
    }
    f
}

fn prompt(f: &Facts) -> String {
    format!("Write one {} item. Reply with JSON only.\n\nFacts:\n{}", f.instruction.as_str(), facts_block(f))
}

fn user(text: String) -> ChatMessage {
    ChatMessage { role: "user".into(), content: MessageContent::Text(text) }
}

fn writer_request(f: &Facts, with_schema: bool) -> ChatRequest {
    let response_format = with_schema.then(|| {
        serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": schema_name(f.instruction), "schema": reply_schema(f.instruction), "strict": true}
        })
    });
    ChatRequest {
        model: "writer".into(),
        messages: vec![
            ChatMessage { role: "system".into(), content: MessageContent::Text("You write training data.".into()) },
            user(prompt(f)),
        ],
        max_tokens: Some(800),
        temperature: Some(0.7),
        response_format,
    }
}

async fn start(rate: f64, log_dir: Option<&std::path::Path>) -> SimHandle {
    let corpus = Arc::new(SimCorpus::new(vec![(truth(0), b"img-0".to_vec())]).unwrap());
    let mut config = SimConfig::new(profile_by_name("mild").unwrap()).with_seed(5).with_writer(SimWriterConfig { error_rate: rate });
    if let Some(d) = log_dir {
        config = config.with_truth_log(d.join("sim-truth.jsonl"));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(corpus, config, listener).await.unwrap()
}

async fn send(client: &reqwest::Client, h: &SimHandle, req: &ChatRequest, id: Option<&str>) -> reqwest::Response {
    let mut b = client.post(format!("{}/chat/completions", h.base_url())).json(req);
    if let Some(id) = id {
        b = b.header("X-Request-Id", id);
    }
    b.send().await.unwrap()
}

async fn content(client: &reqwest::Client, h: &SimHandle, req: &ChatRequest, id: Option<&str>) -> ChatResponse {
    let r = send(client, h, req, id).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_replies_are_seeded_by_content_logged_by_request_id_and_erred_at_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(0.25, Some(dir.path())).await;
    let client = reqwest::Client::new();
    let n = 280;
    // concurrent, in reverse order: replies must not depend on arrival
    let replies: Vec<(usize, ChatResponse)> = futures::stream::iter((0..n).rev())
        .map(|i| {
            let (client, h) = (&client, &h);
            async move {
                let id = format!("req-{i}");
                (i, content(client, h, &writer_request(&facts(i), true), Some(&id)).await)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let log = h.writer_log_entries();
    assert_eq!(log.len(), n);
    let by_id: BTreeMap<String, Option<WriterMistake>> = log.iter().map(|e| (e.request_id.clone().unwrap(), e.mistake)).collect();
    assert_eq!(by_id.len(), n);
    let mut mistakes = 0;
    let mut kinds = BTreeSet::new();
    for (i, resp) in &replies {
        let f = facts(*i);
        let text = resp.choices[0].message.content.clone().unwrap();
        let usage = resp.usage.unwrap();
        assert!(usage.prompt_tokens > 20 && usage.completion_tokens > 0, "{usage:?}");
        assert_eq!(text, h.writer().write(&f, &prompt(&f), 0).text, "the reply is a function of the content");
        let mistake = by_id[&format!("req-{i}")];
        let parsed = parse_reply(f.instruction, &text, "Describe the image.");
        match mistake {
            None => assert!(parsed.is_ok(), "{text}"),
            Some(WriterMistake::MalformedJson) => assert_eq!(parsed.unwrap_err(), ReplyError::MalformedJson),
            Some(WriterMistake::MissingField) => assert_eq!(parsed.unwrap_err(), ReplyError::MissingField),
            Some(_) => assert!(parsed.is_ok(), "{text}"),
        }
        if let Some(k) = mistake {
            mistakes += 1;
            kinds.insert(k);
        }
    }
    let rate = mistakes as f64 / n as f64;
    assert!((0.18..=0.32).contains(&rate), "mistake rate {rate}");
    assert!(kinds.len() >= 6, "{kinds:?}");
    let stats = h.stats();
    assert_eq!((stats.writer_replies, stats.writer_mistakes), (n as u64, mistakes as u64));
    // the same request again gets the same reply
    let again = content(&client, &h, &writer_request(&facts(3), true), None).await;
    let first = &replies.iter().find(|(i, _)| *i == 3).unwrap().1;
    assert_eq!(again.choices[0].message.content, first.choices[0].message.content);
    assert_eq!(h.writer_log_entries().last().unwrap().request_id, None);
    h.shutdown().await.unwrap();
    // the log file beside the truth log, one line per reply
    let lines = std::fs::read_to_string(dir.path().join(WRITER_LOG_FILE)).unwrap();
    let entries: Vec<WriterLogEntry> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), n + 1);
    assert!(lines.lines().all(|l| l.starts_with("{\"request_id\":")), "{lines}");
    assert_eq!(entries.iter().filter(|e| e.mistake.is_some()).count(), mistakes);
}

#[tokio::test]
async fn facts_without_a_schema_with_an_image_and_reasks() {
    let h = start(0.0, None).await;
    let client = reqwest::Client::new();
    let f = facts(0);
    // no schema, an image the corpus does not know: the facts block alone makes it a writer request
    let mut req = writer_request(&f, false);
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b"not in the corpus"));
    req.messages[1].content =
        MessageContent::Parts(vec![ContentPart::ImageUrl { image_url: ImageUrl { url } }, ContentPart::Text { text: prompt(&f) }]);
    let first = content(&client, &h, &req, Some("a")).await.choices[0].message.content.clone().unwrap();
    parse_reply(f.instruction, &first, "").unwrap();
    // re-asks: the previous reply and the rejection appended, a fresh draw each time
    let mut replies = BTreeSet::from([first.clone()]);
    let mut convo = writer_request(&f, true);
    let mut last = first;
    for attempt in 1..=3u64 {
        convo.messages.push(ChatMessage { role: "assistant".into(), content: MessageContent::Text(last.clone()) });
        convo.messages.push(user("Rejected: the answer names an object that is not in the image. Write it again.".into()));
        last = content(&client, &h, &convo, None).await.choices[0].message.content.clone().unwrap();
        assert_eq!(last, h.writer().write(&f, &prompt(&f), attempt).text);
        replies.insert(last.clone());
    }
    assert!(replies.len() >= 3, "re-asks get fresh replies: {replies:?}");
    // a writer schema without facts is a bad request
    let mut bad = writer_request(&f, true);
    bad.messages[1] = user("Write something.".into());
    let r = send(&client, &h, &bad, None).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("facts block"));
    // an untrusted request id is bounded and printable
    let long = reqwest::header::HeaderValue::from_bytes(&b"x\t\xe9".repeat(200)).unwrap();
    let r = client
        .post(format!("{}/chat/completions", h.base_url()))
        .json(&writer_request(&f, true))
        .header("X-Request-Id", long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = h.writer_log_entries().last().unwrap().request_id.clone().unwrap();
    assert!(id.chars().count() <= MAX_REQUEST_ID_CHARS && id.chars().all(|c| !c.is_control()), "{id:?}");
    // model requests still go to the model
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b"img-0"));
    let describe = ChatRequest {
        model: "m".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: MessageContent::Parts(vec![
                ContentPart::Text { text: "Describe this image in detail.".into() },
                ContentPart::ImageUrl { image_url: ImageUrl { url } },
            ]),
        }],
        max_tokens: None,
        temperature: None,
        response_format: None,
    };
    content(&client, &h, &describe, None).await;
    let stats = h.stats();
    assert_eq!((stats.descriptions, stats.writer_replies, stats.writer_mistakes, stats.bad_requests), (1, 5, 0, 1));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn writer_error_rate_is_validated() {
    let corpus = Arc::new(SimCorpus::new(vec![(truth(0), b"img-0".to_vec())]).unwrap());
    let config = SimConfig::new(profile_by_name("mild").unwrap()).with_writer(SimWriterConfig { error_rate: 1.5 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = sim::start(corpus, config, listener).await.unwrap_err();
    assert!(err.to_string().contains("writer.error_rate"), "{err}");
}
