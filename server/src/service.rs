//! The warmpool.v1 gRPC service: decode, call `PoolManager`, encode.

use crate::convert;
use pool_manager::PoolManager;
use std::collections::HashMap;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use warmpool_proto::v1 as api;
use warmpool_proto::v1::warm_pool_server::WarmPool;

pub struct WarmPoolService {
    manager: PoolManager,
}

impl WarmPoolService {
    pub fn new(manager: PoolManager) -> Self {
        Self { manager }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl WarmPool for WarmPoolService {
    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Reply<api::AllocateResponse> {
        let request = convert::allocate_request(request.into_inner())?;
        let allocation = self
            .manager
            .allocate(request)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(api::AllocateResponse {
            allocation: Some(convert::allocation(allocation)),
        }))
    }

    async fn get_allocation(
        &self,
        request: Request<api::GetAllocationRequest>,
    ) -> Reply<api::Allocation> {
        let allocation = self
            .manager
            .get_allocation(&request.into_inner().request_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::allocation(allocation)))
    }

    async fn release(&self, request: Request<api::ReleaseRequest>) -> Reply<api::Allocation> {
        let request = request.into_inner();
        let allocation = self
            .manager
            .release(&request.request_id, request.delete_volume)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::allocation(allocation)))
    }

    async fn list_pools(&self, _: Request<api::ListPoolsRequest>) -> Reply<api::ListPoolsResponse> {
        let pools = self.manager.list_pools().await.map_err(convert::status)?;
        Ok(Response::new(api::ListPoolsResponse {
            pools: pools.into_iter().map(convert::pool).collect(),
        }))
    }

    async fn get_pool(&self, request: Request<api::GetPoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let pool = self.manager.get_pool(&key).await.map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn create_pool(&self, request: Request<api::CreatePoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("invalid spec: is required"))?;
        let spec = convert::pool_spec_from_proto(spec)?;
        let pool = self
            .manager
            .create_pool(key, spec)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn update_pool(&self, request: Request<api::UpdatePoolRequest>) -> Reply<api::Pool> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let from = convert::pool_spec_from_proto(request.spec.unwrap_or_default())?;
        // Check the mask before touching anything, so a bad mask changes nothing.
        convert::apply_mask(&mut from.clone(), &from, &paths)?;
        let pool = self
            .manager
            .update_pool(&key, |spec| {
                convert::apply_mask(spec, &from, &paths).expect("mask checked above")
            })
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::pool(pool)))
    }

    async fn delete_pool(
        &self,
        request: Request<api::DeletePoolRequest>,
    ) -> Reply<api::DeletePoolResponse> {
        let request = request.into_inner();
        let key = convert::pool_key(&request.flavor, &request.availability_zone)?;
        let pool = self
            .manager
            .delete_pool(&key)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(api::DeletePoolResponse {
            pool: Some(convert::pool(pool)),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<api::ListInstancesRequest>,
    ) -> Reply<api::ListInstancesResponse> {
        let request = request.into_inner();
        let key = match (
            request.flavor.is_empty(),
            request.availability_zone.is_empty(),
        ) {
            (true, true) => None,
            _ => Some(convert::pool_key(
                &request.flavor,
                &request.availability_zone,
            )?),
        };
        let instances = self
            .manager
            .list_instances(key.as_ref())
            .await
            .map_err(convert::status)?;
        Ok(Response::new(api::ListInstancesResponse {
            instances: instances.into_iter().map(convert::instance).collect(),
        }))
    }

    type WatchPoolsStream =
        Pin<Box<dyn futures::Stream<Item = Result<api::PoolStatus, Status>> + Send>>;

    async fn watch_pools(
        &self,
        _: Request<api::WatchPoolsRequest>,
    ) -> Reply<Self::WatchPoolsStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let manager = self.manager.clone();
        let mut changes = manager.subscribe();
        tokio::spawn(async move {
            // Last pool message sent per pool: only changes go out.
            let mut sent: HashMap<(String, String), api::Pool> = HashMap::new();
            loop {
                let pools = match manager.list_pools().await {
                    Ok(pools) => pools,
                    Err(e) => {
                        let _ = tx.send(Err(convert::status(e))).await;
                        return;
                    }
                };
                for pool in pools.into_iter().map(convert::pool) {
                    let key = (pool.flavor.clone(), pool.availability_zone.clone());
                    if sent.get(&key) == Some(&pool) {
                        continue;
                    }
                    sent.insert(key, pool.clone());
                    let status = api::PoolStatus {
                        pool: Some(pool),
                        at: Some(std::time::SystemTime::now().into()),
                    };
                    if tx.send(Ok(status)).await.is_err() {
                        return; // the watcher went away
                    }
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
