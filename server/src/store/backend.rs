//! The one implementation of [`Store`]: every dialect's, each method the area function that does it.

use super::dialect::Dialect;
use super::{
    ApiTokenRecord, Appended, ArtifactQuota, CancelledPipeline, Claim, ClaimedJob,
    CommitStatusRecord, Completed, CreatedPipeline, DeliveryRecord, Expired, JobRecord,
    NewArtifact, NewDelivery, NewJob, NewPipeline, NewRepoRecord, NewWorker, News, PipelineRecord,
    PoolDecision, PoolInstance, PoolRecord, ReadyJob, RepoCredential, RepoRecord, Result,
    RetriedPipeline, SealedSecret, SecretRecord, Standing, StatusOutcome, StatusToSend, Store,
    TokenRecord, WorkerRecord,
};
use super::{
    artifacts, cancel, completion, deliveries, demand, instances, jobs, logs, pipelines, pools,
    repos, retry, secrets, statuses, tokens, workers,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gantry_model::wire::{
    ArtifactRef, CompleteRequest, Pool, RepoSettings, Scope, StepReport, TestSummary,
};
use uuid::Uuid;

#[async_trait]
impl<D: Dialect> Store for D {
    fn dialect(&self) -> &'static str {
        D::NAME
    }

    async fn bootstrap(&self, admin_hash: &str, pool_hash: &str) -> Result<bool> {
        tokens::bootstrap(self, admin_hash, pool_hash).await
    }
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        tokens::find_token(self, hash).await
    }
    async fn add_pool_token(&self, hash: &str, pool: &str) -> Result<()> {
        tokens::add_pool_token(self, hash, pool).await
    }
    async fn add_provider_token(&self, hash: &str, pool: &str) -> Result<()> {
        tokens::add_provider_token(self, hash, pool).await
    }
    async fn remove_provider_token(&self, hash: &str) -> Result<()> {
        tokens::remove_provider_token(self, hash).await
    }
    async fn add_instance_token(&self, pool: &str, name: &str, hash: &str) -> Result<()> {
        instances::add_instance_token(self, pool, name, hash).await
    }
    async fn record_instance(&self, pool: &str, instance: &PoolInstance) -> Result<()> {
        instances::record_instance(self, pool, instance).await
    }
    async fn pool_instances(&self, pool: &str) -> Result<Vec<PoolInstance>> {
        instances::pool_instances(self, pool).await
    }
    async fn remove_instance_token(&self, pool: &str, name: &str) -> Result<()> {
        instances::remove_instance_token(self, pool, name).await
    }
    async fn forget_instance(&self, pool: &str, name: &str) -> Result<()> {
        instances::forget_instance(self, pool, name).await
    }
    async fn create_api_token(
        &self,
        name: &str,
        scope: Scope,
        hash: &str,
    ) -> Result<ApiTokenRecord> {
        tokens::create_api_token(self, name, scope, hash).await
    }
    async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        tokens::list_api_tokens(self).await
    }
    async fn revoke_api_token(&self, name: &str) -> Result<bool> {
        tokens::revoke_api_token(self, name).await
    }
    async fn set_admin_token(&self, hash: &str) -> Result<()> {
        tokens::set_admin_token(self, hash).await
    }

    async fn create_repo(&self, repo: &NewRepoRecord) -> Result<RepoRecord> {
        repos::create_repo(self, repo).await
    }
    async fn list_repos(&self) -> Result<Vec<RepoRecord>> {
        repos::list_repos(self).await
    }
    async fn get_repo(&self, name: &str) -> Result<Option<RepoRecord>> {
        repos::get_repo(self, name).await
    }

    async fn create_pipeline(&self, new: &NewPipeline) -> Result<CreatedPipeline> {
        pipelines::create_pipeline(self, new).await
    }
    async fn record_ignored_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()> {
        deliveries::record_ignored_delivery(self, delivery, reason).await
    }
    async fn record_refused_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()> {
        deliveries::record_refused_delivery(self, delivery, reason).await
    }
    async fn prune_deliveries(&self, repo_id: i64, keep: u32) -> Result<u64> {
        deliveries::prune_deliveries(self, repo_id, keep).await
    }
    async fn recent_deliveries(&self, repo_id: i64, limit: u32) -> Result<Vec<DeliveryRecord>> {
        deliveries::recent_deliveries(self, repo_id, limit).await
    }
    async fn get_delivery(&self, repo_id: i64, id: i64) -> Result<Option<DeliveryRecord>> {
        deliveries::get_delivery(self, repo_id, id).await
    }
    async fn unprepared_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        pipelines::unprepared_pipelines(self).await
    }
    async fn add_jobs(&self, pipeline: Uuid, jobs: &[NewJob]) -> Result<()> {
        pipelines::add_jobs(self, pipeline, jobs).await
    }
    async fn fail_pipeline(&self, pipeline: Uuid, message: &str) -> Result<()> {
        pipelines::fail_pipeline(self, pipeline, message).await
    }
    async fn drop_pipeline(&self, pipeline: Uuid, reason: &str) -> Result<()> {
        pipelines::drop_pipeline(self, pipeline, reason).await
    }

    async fn list_pipelines(
        &self,
        repo: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PipelineRecord>> {
        pipelines::list_pipelines(self, repo, before, limit).await
    }
    async fn recent_pipelines(&self, limit: i64) -> Result<Vec<PipelineRecord>> {
        pipelines::recent_pipelines(self, limit).await
    }
    async fn get_pipeline(&self, repo: &str, number: i64) -> Result<Option<PipelineRecord>> {
        pipelines::get_pipeline(self, repo, number).await
    }
    async fn get_pipeline_by_id(&self, id: Uuid) -> Result<Option<PipelineRecord>> {
        pipelines::get_pipeline_by_id(self, id).await
    }
    async fn pipeline_jobs(&self, pipeline: Uuid) -> Result<Vec<JobRecord>> {
        jobs::pipeline_jobs(self, pipeline).await
    }
    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>> {
        jobs::get_job(self, id).await
    }
    async fn job_steps(&self, job: Uuid, attempt: u32) -> Result<Vec<StepReport>> {
        jobs::job_steps(self, job, attempt).await
    }

    async fn register_worker(&self, worker: &NewWorker, token_hash: &str) -> Result<Uuid> {
        workers::register_worker(self, worker, token_hash).await
    }
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        pools::list_workers(self).await
    }
    async fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        pools::list_pool_records(self).await
    }
    async fn find_pool(&self, name: &str) -> Result<Option<PoolRecord>> {
        pools::find_pool(self, name).await
    }
    async fn apply_config_pools(&self, list: &[Pool]) -> Result<()> {
        pools::apply_config_pools(self, list).await
    }
    async fn create_pool(&self, pool: &Pool, token_hash: &str) -> Result<()> {
        pools::create_pool(self, pool, token_hash).await
    }
    async fn update_pool(&self, pool: &Pool) -> Result<()> {
        pools::update_pool(self, pool).await
    }
    async fn rotate_pool_token(&self, pool: &str, token_hash: &str) -> Result<()> {
        pools::rotate_pool_token(self, pool, token_hash).await
    }
    async fn record_pool_decision(
        &self,
        pool: &str,
        from: u32,
        to: u32,
        reason: &str,
    ) -> Result<()> {
        pools::record_pool_decision(self, pool, from, to, reason).await
    }
    async fn pool_decisions(&self, pool: &str) -> Result<Vec<PoolDecision>> {
        pools::pool_decisions(self, pool).await
    }
    async fn set_pool_progress(
        &self,
        pool: &str,
        booting: &[String],
        error: Option<&str>,
    ) -> Result<()> {
        pools::set_pool_progress(self, pool, booting, error).await
    }
    async fn take_pool_turn(
        &self,
        pool: &str,
        server: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        pools::take_pool_turn(self, pool, server, now_ms, until_ms).await
    }
    async fn drain_worker(&self, worker: Uuid) -> Result<bool> {
        pools::drain_worker(self, worker).await
    }
    async fn touch_worker(&self, worker: Uuid) -> Result<Standing> {
        pools::touch_worker(self, worker).await
    }
    async fn deregister_worker(&self, worker: Uuid) -> Result<()> {
        pools::deregister_worker(self, worker).await
    }
    async fn ready_jobs(&self) -> Result<Vec<ReadyJob>> {
        demand::ready_jobs(self).await
    }
    async fn recent_durations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<(i64, String), i64>> {
        demand::recent_durations(self, since).await
    }
    async fn remove_stale_workers(&self, seen_before: DateTime<Utc>) -> Result<Vec<String>> {
        pools::remove_stale_workers(self, seen_before).await
    }

    async fn cancel_pipeline(&self, pipeline: Uuid) -> Result<CancelledPipeline> {
        cancel::cancel(self, pipeline, None).await
    }
    async fn cancel_job(&self, pipeline: Uuid, job: Uuid) -> Result<CancelledPipeline> {
        cancel::cancel(self, pipeline, Some(job)).await
    }
    async fn supersede_pipelines(
        &self,
        newer: &PipelineRecord,
    ) -> Result<Vec<(Uuid, CancelledPipeline)>> {
        cancel::supersede_pipelines(self, newer).await
    }
    async fn running_jobs(&self, repo_id: i64) -> Result<u64> {
        repos::running_jobs(self, repo_id).await
    }
    async fn update_repo_settings(
        &self,
        name: &str,
        settings: &RepoSettings,
    ) -> Result<RepoRecord> {
        repos::update_repo_settings(self, name, settings).await
    }
    async fn set_repo_credential(
        &self,
        repo_id: i64,
        which: RepoCredential,
        sealed: Option<&[u8]>,
    ) -> Result<()> {
        repos::set_repo_credential(self, repo_id, which, sealed).await
    }
    async fn repo_credential(
        &self,
        repo_id: i64,
        which: RepoCredential,
    ) -> Result<Option<Vec<u8>>> {
        repos::repo_credential(self, repo_id, which).await
    }
    async fn set_repo_secret(&self, repo_id: i64, name: &str, sealed: &[u8]) -> Result<()> {
        secrets::set_repo_secret(self, repo_id, name, sealed).await
    }
    async fn delete_repo_secret(&self, repo_id: i64, name: &str) -> Result<bool> {
        secrets::delete_repo_secret(self, repo_id, name).await
    }
    async fn list_repo_secrets(&self, repo_id: i64) -> Result<Vec<SecretRecord>> {
        secrets::list_repo_secrets(self, repo_id).await
    }
    async fn sealed_repo_secrets(&self, repo_id: i64) -> Result<Vec<SealedSecret>> {
        secrets::sealed_repo_secrets(self, repo_id).await
    }
    async fn requeue_infra(
        &self,
        job: Uuid,
        lease: Uuid,
        report: &CompleteRequest,
        cap: u32,
    ) -> Result<Option<Completed>> {
        retry::requeue_infra(self, job, lease, report, cap).await
    }
    async fn retry_pipeline(&self, pipeline: Uuid) -> Result<RetriedPipeline> {
        retry::retry_pipeline(self, pipeline).await
    }
    async fn announce(&self, news: News) -> Result<()> {
        self.announce_news(news).await
    }
    async fn listen(&self, heard: Box<dyn Fn(News) + Send + Sync>) -> Result<()> {
        self.listen_for_news(heard).await
    }
    async fn claim_job(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        self.claim(claim).await
    }
    async fn heartbeat(&self, job: Uuid, lease: Uuid, deadline_ms: i64) -> Result<bool> {
        jobs::heartbeat(self, job, lease, deadline_ms).await
    }
    async fn expire_leases(&self, now_ms: i64, infra_retries: u32) -> Result<Vec<Expired>> {
        jobs::expire_leases(self, now_ms, infra_retries).await
    }
    async fn extend_leases(&self, deadline_ms: i64) -> Result<u64> {
        jobs::extend_leases(self, deadline_ms).await
    }
    async fn append_log(
        &self,
        job: Uuid,
        lease: Uuid,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<Appended> {
        logs::append_log(self, job, lease, offset, data, cap).await
    }
    async fn read_log(&self, job: Uuid, attempt: u32, from: u64, max: usize) -> Result<Vec<u8>> {
        logs::read_log(self, job, attempt, from, max).await
    }
    async fn log_length(&self, job: Uuid, attempt: u32) -> Result<u64> {
        logs::log_length(self, job, attempt).await
    }
    async fn record_step(&self, job: Uuid, lease: Uuid, step: &StepReport) -> Result<()> {
        jobs::record_step(self, job, lease, step).await
    }
    async fn complete_job(
        &self,
        job: Uuid,
        lease: Uuid,
        report: &CompleteRequest,
    ) -> Result<Completed> {
        completion::complete_leased(self, job, lease, report).await
    }

    async fn artifact_quota(&self, job: Uuid, lease: Uuid) -> Result<ArtifactQuota> {
        artifacts::artifact_quota(self, job, lease).await
    }
    async fn record_artifact(&self, job: Uuid, lease: Uuid, artifact: &NewArtifact) -> Result<()> {
        artifacts::record_artifact(self, job, lease, artifact).await
    }
    async fn job_artifacts(&self, job: Uuid, attempt: u32) -> Result<Vec<ArtifactRef>> {
        artifacts::job_artifacts(self, job, attempt).await
    }
    async fn pipeline_artifacts(&self, pipeline: Uuid) -> Result<Vec<ArtifactRef>> {
        artifacts::pipeline_artifacts(self, pipeline).await
    }
    async fn pipeline_tests(&self, pipeline: Uuid) -> Result<Option<TestSummary>> {
        artifacts::pipeline_tests(self, pipeline).await
    }

    async fn claim_commit_statuses(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<StatusToSend>> {
        statuses::claim_commit_statuses(self, now_ms, hold_until_ms, limit).await
    }
    async fn finish_commit_status(&self, id: i64, outcome: &StatusOutcome) -> Result<()> {
        statuses::finish_commit_status(self, id, outcome).await
    }
    async fn next_commit_status_ms(&self) -> Result<Option<i64>> {
        statuses::next_commit_status_ms(self).await
    }
    async fn release_commit_status_claims(&self) -> Result<u64> {
        statuses::release_commit_status_claims(self).await
    }
    async fn commit_statuses(&self, pipeline: Uuid) -> Result<Vec<CommitStatusRecord>> {
        statuses::commit_statuses(self, pipeline).await
    }
}
