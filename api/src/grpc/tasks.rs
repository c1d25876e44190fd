//! `bida.v1.Tasks`: POST /v1/tasks and GET /v1/tasks/{id}.

use actix_web::web;
use bida_domain::task::Submission;
use tonic::{Request, Response, Status};

use super::admit;
use super::bridge::{reply, status, to_json};
use super::proto::{tasks_server::Tasks, GetTaskRequest, SubmitTaskRequest, SubmitTaskResponse, TaskDetail};
use crate::ApiState;

pub struct TasksApi(pub web::Data<ApiState>);

#[tonic::async_trait]
impl Tasks for TasksApi {
    async fn submit_task(&self, request: Request<SubmitTaskRequest>) -> Result<Response<SubmitTaskResponse>, Status> {
        let admitted = admit(&self.0, &request, "bida.v1.Tasks/SubmitTask").await?;
        let mut body = to_json(request.get_ref(), "bida.v1.SubmitTaskRequest")?;
        let key = body
            .as_object_mut()
            .and_then(|fields| fields.remove("idempotency_key"))
            .and_then(|key| key.as_str().map(str::to_string));
        let submission: Submission = crate::json::from_value(body).map_err(status)?;
        let accepted = admitted
            .run(crate::tasks::accept(&self.0, &admitted.caller, submission, key))
            .await
            .map_err(status)?;
        Ok(Response::new(SubmitTaskResponse {
            task: Some(reply(&accepted.task, "bida.v1.Task")?),
            replayed: accepted.replayed,
        }))
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<TaskDetail>, Status> {
        let admitted = admit(&self.0, &request, "bida.v1.Tasks/GetTask").await?;
        let detail = crate::tasks::shown_detail(&self.0, &admitted.caller, &request.get_ref().id)
            .await
            .map_err(status)?;
        // The HTTP API flattens the summary into the detail; here it is a message of its own.
        let mut task = detail;
        let mut parts = serde_json::Map::new();
        if let Some(fields) = task.as_object_mut() {
            for part in ["request", "policy", "attempts", "version"] {
                if let Some(value) = fields.remove(part) {
                    parts.insert(part.to_string(), value);
                }
            }
        }
        parts.insert("task".into(), task);
        Ok(Response::new(reply(&parts, "bida.v1.TaskDetail")?))
    }
}
