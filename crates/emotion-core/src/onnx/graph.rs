//! A small builder of ONNX graphs: named values, weights as initializers, one node per call. Every
//! node's outputs get fresh names, so a graph reads top to bottom like the model's forward pass.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// ONNX's IR version for opset 17 (onnx 1.12+ reads it).
const IR_VERSION: i64 = 8;
/// STFT and LayerNormalization are standard ops from opset 17 on.
pub const OPSET: i64 = 17;
/// The most weight bytes a graph stores inline (protobuf's 2 GiB, less room for the graph itself).
const MAX_INLINE_BYTES: usize = 2_000_000_000;

/// One dimension of a graph input or output: fixed, or named and free (`batch`, `samples`).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

/// Element types of graph inputs.
#[derive(Debug, Clone, Copy)]
pub enum Elem {
    Float,
    Int64,
    Bool,
}

impl Elem {
    fn data_type(self) -> DataType {
        match self {
            Elem::Float => DataType::Float,
            Elem::Int64 => DataType::Int64,
            Elem::Bool => DataType::Bool,
        }
    }
}

/// A node attribute.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n),
                Dim::Named(s) => DimValue::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    pub fn new() -> Graph {
        Graph { nodes: Vec::new(), initializers: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), counter: 0 }
    }

    /// Declares a float32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.typed_input(name, Elem::Float, dims)
    }

    /// Declares a graph input of element type `elem`.
    pub fn typed_input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem.data_type(), dims));
        name.to_string()
    }

    /// Makes `value` a float32 graph output called `name`.
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        self.node("Identity", &[value], &[name], vec![]);
        self.outputs.push(value_info(name, DataType::Float, dims));
    }

    /// A fresh value name (`hint_<n>`).
    pub fn name(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// A float32 initializer from host values.
    pub fn floats(&mut self, hint: &str, dims: &[i64], values: &[f32]) -> String {
        let name = self.name(hint);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// A float32 initializer holding `tensor` (any device or kind; stored as float32).
    pub fn weight(&mut self, hint: &str, tensor: &Tensor) -> Result<String> {
        let t = tensor.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let values = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
        Ok(self.floats(hint, &t.size(), &values))
    }

    /// A scalar float32 constant (broadcasts in arithmetic).
    pub fn scalar(&mut self, value: f32) -> String {
        self.floats("c", &[], &[value])
    }

    /// A 1-D int64 constant (shapes, axes, pads).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.name("i");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// A scalar int64 constant.
    pub fn int(&mut self, value: i64) -> String {
        let name = self.name("i");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![value],
            ..Default::default()
        });
        name
    }

    /// One node with one output; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.name(&op.to_lowercase());
        self.node(op, inputs, &[&out], attrs);
        out
    }

    /// One node with the given outputs (an empty name skips an optional output).
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) {
        let attribute = attrs
            .into_iter()
            .map(|(name, value)| {
                let mut a = AttributeProto { name: Some(name.into()), ..Default::default() };
                match value {
                    Attr::Int(i) => (a.i, a.r#type) = (Some(i), Some(AttributeType::Int as i32)),
                    Attr::Ints(v) => (a.ints, a.r#type) = (v, Some(AttributeType::Ints as i32)),
                    Attr::Float(f) => (a.f, a.r#type) = (Some(f), Some(AttributeType::Float as i32)),
                    Attr::Str(s) => (a.s, a.r#type) = (Some(s.as_bytes().to_vec()), Some(AttributeType::String as i32)),
                }
                a
            })
            .collect();
        let name = self.name(op);
        self.nodes.push(NodeProto {
            name: Some(name),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
    }

    /// `a ⊙ b` for the binary arithmetic ops (`Add`, `Sub`, `Mul`, `Div`, `Max`, `Pow`).
    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op(op, &[a, b], vec![])
    }

    /// Bytes held by the initializers (the model's size on disk, near enough).
    pub fn weight_bytes(&self) -> usize {
        self.initializers.iter().map(|t| t.raw_data.as_ref().map_or(t.int64_data.len() * 8, |d| d.len())).sum()
    }

    /// The finished model; `metadata` becomes its `metadata_props`.
    pub fn into_model(self, name: &str, doc: &str, metadata: &[(&str, String)]) -> Result<ModelProto> {
        if self.outputs.is_empty() {
            return Err(Error::Internal("an ONNX graph without outputs".into()));
        }
        // Protobuf messages stop at 2 GiB, and weights are stored inline (ONNX external data is not
        // written): a Whisper-large encoder in fp32 does not fit.
        if self.weight_bytes() > MAX_INLINE_BYTES {
            return Err(Error::invalid(
                "model",
                format!(
                    "its ONNX graph would hold {:.2} GB of weights, over the 2 GB a single ONNX file can hold; export a model on a smaller encoder",
                    self.weight_bytes() as f64 / 1e9
                ),
            ));
        }
        Ok(ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
            producer_name: Some("emotion-pipeline".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            doc_string: Some(doc.into()),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: Some(k.to_string()), value: Some(v.clone()) })
                .collect(),
            graph: Some(GraphProto {
                name: Some(name.into()),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}
