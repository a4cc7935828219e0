//! Recording a list of dispatches and copies into a command buffer: runs
//! of dispatches share one compute pass.

/// One command of a forward call.
pub(super) enum Command<'a> {
    Dispatch(&'a wgpu::ComputePipeline, &'a wgpu::BindGroup, [u32; 3]),
    /// Copy `bytes` from the start of one buffer to the start of another.
    Copy(&'a wgpu::Buffer, &'a wgpu::Buffer, u64),
}

pub(super) fn encode_into(enc: &mut wgpu::CommandEncoder, cmds: &[Command]) {
    let mut i = 0;
    while i < cmds.len() {
        match &cmds[i] {
            Command::Dispatch(..) => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                while let Some(Command::Dispatch(pipe, bg, wg)) = cmds.get(i) {
                    pass.set_pipeline(pipe);
                    pass.set_bind_group(0, *bg, &[]);
                    pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
                    i += 1;
                }
            }
            Command::Copy(src, dst, bytes) => {
                enc.copy_buffer_to_buffer(src, 0, dst, 0, *bytes);
                i += 1;
            }
        }
    }
}

pub(super) fn encode(device: &wgpu::Device, cmds: &[Command]) -> wgpu::CommandBuffer {
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
    encode_into(&mut enc, cmds);
    enc.finish()
}
