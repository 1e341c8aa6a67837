output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 range."
  value       = aws_vpc.this.cidr_block
}

output "azs" {
  description = "The availability zones used, in subnet order."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone: the ALB's."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets, one per zone: the API and worker tasks'."
  value       = aws_subnet.private[*].id
}

output "data_subnet_ids" {
  description = "Data subnets, one per zone, without a route to the internet: ElastiCache, MSK and ScyllaDB."
  value       = aws_subnet.data[*].id
}

output "nat_public_ips" {
  description = "The NAT gateways' public addresses (egress of the private tier)."
  value       = aws_eip.nat[*].public_ip
}
