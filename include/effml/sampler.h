/**
 * @file effml/sampler.h
 * @brief Samplers: SMOTE family, temperature sampling, lp sensitivity sampling (issue 6)
 */
#ifndef EFFML_SAMPLER_H
#define EFFML_SAMPLER_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

EFFML_END_DECLS

#endif /* EFFML_SAMPLER_H */
