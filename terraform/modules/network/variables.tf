variable "name" {
  description = "Prefix of every resource's name, e.g. \"shortener-eu\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,25}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 27 lowercase letters, digits and hyphens, starting with a letter (IAM name prefixes are at most 38 characters)."
  }
}

variable "cidr_block" {
  description = "The VPC's IPv4 range. Each region needs its own, disjoint from the others' (VPC peering or Transit Gateway between regions need that)."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr_block)) && can(regex("/(1[6-9]|20)$", var.cidr_block)) && can(cidrsubnet(var.cidr_block, 0, 0) == var.cidr_block ? true : tobool("host bits"))
    error_message = "cidr_block must be an IPv4 network from /16 to /20, without host bits (AWS takes /16 to /28; the module cuts it in 3 tiers of up to 6 zones)."
  }
}

variable "az_count" {
  description = "Availability zones used: subnets of every tier in each. ScyllaDB's replication factor 3 per datacenter wants 3 (one rack per zone)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 2 to 6."
  }
}

variable "availability_zones" {
  description = "The zones to use, by name, az_count of them; empty: the region's first az_count zones. Pin them in a deployment: a subnet's zone cannot change without replacing it."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == length(distinct(var.availability_zones))
    error_message = "availability_zones must not name a zone twice."
  }
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per zone (a zone's loss does not cut the others' egress), or one for the whole VPC (cheaper, a single point of failure for egress)."
  type        = bool
  default     = true
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch Logs retention of at least a year (365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
