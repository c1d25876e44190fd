//! The console's words in English and Simplified Chinese: chosen by the
//! `bida_lang` cookie (the language switch), else by the browser's
//! `Accept-Language`.

use actix_web::http::header::ACCEPT_LANGUAGE;
use actix_web::HttpRequest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn of(request: &HttpRequest) -> Self {
        if let Some(cookie) = request.cookie("bida_lang") {
            return Self::parse(cookie.value()).unwrap_or(Self::En);
        }
        let accepted = request
            .headers()
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The first language named that the console speaks, in the browser's order.
        accepted
            .split(',')
            .filter_map(|part| part.split(';').next())
            .find_map(|tag| Self::parse(tag.trim()))
            .unwrap_or(Self::En)
    }

    fn parse(tag: &str) -> Option<Self> {
        let tag = tag.to_ascii_lowercase();
        if tag.starts_with("zh") {
            Some(Self::Zh)
        } else if tag.starts_with("en") {
            Some(Self::En)
        } else {
            None
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }
}

/// `key`, English, Chinese.
const WORDS: &[(&str, &str, &str)] = &[
    ("bida", "Bida callback center", "必达回调中心"),
    ("overview", "Overview", "概览"),
    ("tasks", "Tasks", "任务"),
    ("consumers", "Consumers", "消费者"),
    ("login", "Log in", "登录"),
    ("logout", "Log out", "退出"),
    ("username", "Username", "用户名"),
    ("password", "Password", "密码"),
    (
        "login_failed",
        "Wrong username or password, or too many attempts.",
        "用户名或密码错误，或尝试次数过多。",
    ),
    ("refused", "Your role may not do this.", "你的角色无权执行此操作。"),
    ("role", "Role", "角色"),
    ("status", "Status", "状态"),
    ("total", "Total", "总数"),
    ("pending", "Pending", "待投递"),
    ("delivering", "Delivering", "投递中"),
    ("retrying", "Retrying", "重试中"),
    ("delivered", "Delivered", "已送达"),
    ("dead", "Dead letters", "死信"),
    ("cancelled", "Cancelled", "已取消"),
    ("messages_7d", "Messages per hour, last 7 days", "近 7 天每小时消息数"),
    ("chart_empty", "No messages in the last 7 days.", "近 7 天没有消息。"),
    ("last_hour", "Last hour", "最近一小时"),
    ("attempts", "Attempts", "尝试次数"),
    ("delivery_rate", "Delivered", "送达率"),
    ("failure_rate", "Failed attempts", "失败率"),
    ("apps", "Apps", "应用"),
    ("app", "App", "应用"),
    ("sent", "Sent", "发送"),
    ("received", "Received", "接收"),
    (
        "failing_endpoints",
        "Top failing endpoints (24 h)",
        "失败最多的端点（24 小时）",
    ),
    ("endpoint", "Endpoint", "端点"),
    ("failed", "Failed", "失败"),
    ("nodes", "Nodes", "节点"),
    ("node", "Node", "节点"),
    ("version", "Version", "版本"),
    ("heartbeat", "Heartbeat", "心跳"),
    ("alive", "alive", "在线"),
    ("down", "down", "离线"),
    ("none", "None.", "无。"),
    ("filter", "Filter", "筛选"),
    ("any", "any", "全部"),
    ("consumer", "Consumer", "消费者"),
    ("endpoint_host", "Endpoint host", "回调主机"),
    ("created_after", "Created after", "创建晚于"),
    ("created_before", "Created before", "创建早于"),
    ("created", "Created", "创建时间"),
    ("url", "URL", "URL"),
    ("next_page", "Next page", "下一页"),
    ("task", "Task", "任务"),
    ("message_id", "Message id (webhook-id)", "消息 ID（webhook-id）"),
    ("request", "Request", "请求"),
    ("method", "Method", "方法"),
    ("headers", "Headers", "请求头"),
    ("body", "Body", "请求体"),
    ("timeline", "Timeline", "时间线"),
    ("attempt", "Attempt", "第几次"),
    ("response", "Response", "响应"),
    ("latency", "Latency", "耗时"),
    ("error", "Error", "错误"),
    ("retry", "Retry", "重试"),
    ("cancel", "Cancel", "取消"),
    ("edit_replay", "Edit and replay", "编辑并重放"),
    ("replay", "Replay", "重放"),
    ("reason", "Reason", "原因"),
    ("history", "History (who changed what)", "变更历史（谁在何时改了什么）"),
    ("who", "Who", "操作者"),
    ("when", "When", "时间"),
    ("event", "Event", "事件"),
    ("name", "Name", "名称"),
    ("state", "State", "状态"),
    ("desired", "Desired", "期望状态"),
    ("pause", "Pause", "暂停"),
    ("resume", "Resume", "恢复"),
    ("stop", "Stop", "停止"),
    ("start", "Start", "启动"),
    ("policy", "Policy (applies live)", "策略（实时生效）"),
    ("concurrency", "Concurrency", "并发数"),
    (
        "rate_per_sec",
        "Rate limit (messages/s, 0: none)",
        "限速（条/秒，0 为不限）",
    ),
    ("timeout_ms", "Timeout (ms)", "超时（毫秒）"),
    ("max_attempts", "Attempts", "最大尝试次数"),
    ("save", "Save", "保存"),
    ("source", "Source", "来源"),
    ("broker", "Broker", "MQ 集群"),
    ("consumed_per_sec", "Consumed / delivered per s", "每秒消费 / 送达"),
    ("activity", "Activity (24 h)", "活跃度（24 小时）"),
    ("lag", "Lag", "积压"),
    ("bida_consumers", "Bida consumers", "Bida 消费者"),
    ("updated_live", "Updates live", "实时更新"),
    ("language", "中文", "English"),
    ("not_found", "Not found.", "未找到。"),
    ("attempts_of", "attempts", "次尝试"),
    ("ms", "ms", "毫秒"),
    ("brokers", "Brokers", "MQ 集群"),
    ("kind", "Kind", "类型"),
    ("connection", "Connection", "连接"),
    ("online", "Online", "在线"),
    ("offline", "Offline", "离线"),
    ("take_offline", "Take offline", "下线"),
    ("bring_online", "Bring online", "上线"),
    ("health", "Health", "健康"),
    ("reachable", "reachable", "可达"),
    ("unreachable", "unreachable", "不可达"),
    ("topics", "Topics", "主题"),
    ("partitions", "Partitions", "分区"),
    ("queues", "Queues", "队列"),
    ("destinations", "Topics, queues and streams", "主题、队列与流"),
    ("messages", "Messages", "消息数"),
    ("connections", "Connections", "连接数"),
    ("memory", "Memory", "内存"),
    ("disk_free", "Disk free", "磁盘剩余"),
    ("uptime", "Up for", "运行时长"),
    ("cpu_average", "CPU (average since start)", "CPU（启动以来平均）"),
    ("cores", "cores", "核"),
    ("actors", "Actors", "Actor 数"),
    ("task_actors", "tasks", "任务"),
    ("consumer_actors", "consumers", "消费者"),
    ("started", "Started", "启动时间"),
    ("users", "Users", "用户"),
    ("keys", "API keys", "API 密钥"),
    ("installation_keys", "Installation-wide keys", "全局密钥"),
    ("prefix", "Prefix", "前缀"),
    ("last_used", "Last used", "最近使用"),
    ("revoke", "Revoke", "吊销"),
    ("revoked", "revoked", "已吊销"),
    ("new_key", "New key", "新建密钥"),
    ("new_app", "New app", "新建应用"),
    ("allowed_networks", "Allowed networks (CIDR)", "允许的网段（CIDR）"),
    ("signing_secrets", "Signing secrets", "签名密钥"),
    ("rotate_secret", "Rotate signing secret", "轮换签名密钥"),
    ("create", "Create", "创建"),
    ("shown_once", "Shown only now: keep it.", "仅显示这一次，请妥善保存。"),
    ("back", "Back", "返回"),
    ("new_user", "New user", "新建用户"),
    ("change_role", "Change role", "修改角色"),
    ("set_password", "Set password", "设置密码"),
    ("delete", "Delete", "删除"),
    ("replay_these", "Replay these tasks…", "重放这些任务…"),
    ("replay_count", "Tasks this will deliver again", "将重新投递的任务数"),
    ("replay_limit", "at most", "最多"),
    ("confirm", "Confirm", "确认"),
    ("new_consumer", "New consumer", "新建消费者"),
    ("search", "Search", "搜索"),
    ("new_broker", "New broker", "新建 MQ 集群"),
    ("edit_app", "Edit", "编辑"),
    (
        "edit",
        "Edit (empty fields stay as they are)",
        "编辑（留空的字段保持不变）",
    ),
    ("amqp_url", "AMQP URL (RabbitMQ)", "AMQP 地址（RabbitMQ）"),
    (
        "management_url",
        "Management URL (RabbitMQ, optional)",
        "管理接口地址（RabbitMQ，可选）",
    ),
    (
        "bootstrap_servers",
        "Bootstrap servers (Kafka)",
        "Bootstrap 地址（Kafka）",
    ),
    (
        "search_hint",
        "task id, webhook-id, idempotency key or body text",
        "任务 ID、webhook-id、幂等键或请求体文本",
    ),
    (
        "search_exact",
        "Found by id, message id or idempotency key.",
        "按 ID、消息 ID 或幂等键查找。",
    ),
    (
        "search_body",
        "Searched the bodies of the last 24 hours' tasks (200 at most).",
        "已搜索最近 24 小时任务的请求体（最多 200 条）。",
    ),
    (
        "search_cut",
        "The body search took too long and was stopped; narrow it with an app or a day.",
        "请求体搜索耗时过长已中止；请用应用或日期缩小范围。",
    ),
    (
        "list_cut",
        "This filter is read without an index, a few seconds per page; it has been read back to tasks created at",
        "此筛选条件无索引可用，每页只读取数秒；已读取到此时间创建的任务：",
    ),
    ("queue", "Queue", "队列"),
    ("group", "Consumer group", "消费组"),
    ("backoff_initial_ms", "First retry after (ms)", "首次重试间隔（毫秒）"),
    ("backoff_max_ms", "Longest retry interval (ms)", "最长重试间隔（毫秒）"),
    ("backoff_multiplier", "Backoff multiplier", "退避倍数"),
    ("retry_on", "Retry on status", "重试的状态码"),
    ("expect_status", "Success status", "成功状态码"),
    (
        "expect_body_contains",
        "Success when the body contains",
        "响应体包含即成功",
    ),
    (
        "expect_json_pointer",
        "Success when the JSON response field",
        "响应 JSON 字段",
    ),
    ("expect_json_equals", "equals (JSON value)", "等于（JSON 值）"),
    ("ordering", "Ordering", "顺序"),
    ("ordering_none", "none (concurrent)", "无（并发）"),
    ("ordering_key", "by message key", "按消息键保序"),
    (
        "breaker_failures",
        "Breaker: failures in a row (0: off)",
        "熔断：连续失败次数（0 为关闭）",
    ),
    ("breaker_open_ms", "Breaker: open for (ms)", "熔断：打开时长（毫秒）"),
    ("parked_lanes", "Parked lanes", "阻塞的键"),
    ("key", "Key", "键"),
    ("offsets", "Offsets and resends", "位点与重发"),
    ("reset_to", "Reset to", "重置到"),
    (
        "reset_offsets",
        "Reset offsets (stopped consumers)",
        "重置位点（需先停止）",
    ),
    ("from", "From", "从"),
    ("to", "To", "到"),
    ("resend", "Resend", "重发"),
    ("members", "Members (pull)", "拉取成员"),
    ("member", "Member", "成员"),
    ("address", "Address", "地址"),
    ("gone", "gone", "离线"),
    ("leases", "Leases", "租约"),
    ("acked", "Acked", "已确认"),
    ("lane", "Lane", "队列"),
    ("waiting", "Waiting", "等待中"),
    ("no_members", "No member has pulled yet.", "尚无成员拉取。"),
];

/// The words of one language, for templates: `{{ t.get("tasks") }}`.
#[derive(Clone, Copy, Debug)]
pub struct Tr(pub Lang);

impl Tr {
    pub fn get(&self, key: &str) -> &'static str {
        match WORDS.iter().find(|(k, _, _)| *k == key) {
            Some((_, en, zh)) => match self.0 {
                Lang::En => en,
                Lang::Zh => zh,
            },
            None => {
                tracing::warn!(key, "the console has no words for this key");
                "?"
            }
        }
    }

    /// Words that come with their own translation (a broker kind's fields).
    pub fn pick(&self, words: &(&'static str, &'static str)) -> &'static str {
        match self.0 {
            Lang::En => words.0,
            Lang::Zh => words.1,
        }
    }

    pub fn lang(&self) -> &'static str {
        self.0.code()
    }

    /// The language the switch leads to.
    pub fn other_lang(&self) -> &'static str {
        match self.0 {
            Lang::En => "zh",
            Lang::Zh => "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_there_once_in_both_languages() {
        for (i, (key, en, zh)) in WORDS.iter().enumerate() {
            assert!(!en.is_empty() && !zh.is_empty(), "{key}");
            assert!(!WORDS[i + 1..].iter().any(|(k, _, _)| k == key), "{key} twice");
        }
    }

    #[test]
    fn the_browser_language_chooses_unless_switched() {
        use actix_web::test::TestRequest;
        let chinese = TestRequest::default()
            .insert_header((ACCEPT_LANGUAGE, "zh-CN,zh;q=0.9,en;q=0.8"))
            .to_http_request();
        assert_eq!(Lang::of(&chinese), Lang::Zh);
        let french_then_english = TestRequest::default()
            .insert_header((ACCEPT_LANGUAGE, "fr-FR, en;q=0.5"))
            .to_http_request();
        assert_eq!(Lang::of(&french_then_english), Lang::En);
        let switched = TestRequest::default()
            .insert_header((ACCEPT_LANGUAGE, "zh-CN"))
            .cookie(actix_web::cookie::Cookie::new("bida_lang", "en"))
            .to_http_request();
        assert_eq!(Lang::of(&switched), Lang::En);
    }
}
