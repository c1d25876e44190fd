use super::TaskStatus;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("the task already exists")]
    AlreadySubmitted,
    #[error("no such task")]
    NotFound,
    #[error("cannot {action} a task that is {status}")]
    InvalidState { action: &'static str, status: TaskStatus },
    #[error("attempt {got} was reported but attempt {expected} is the next one")]
    AttemptOutOfOrder { expected: u32, got: u32 },
}
