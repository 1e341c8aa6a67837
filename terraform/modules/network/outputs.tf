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

output "public_subnet_cidrs" {
  description = "The public subnets' ranges, in zone order."
  value       = aws_subnet.public[*].cidr_block
}

output "private_subnet_cidrs" {
  description = "The private subnets' ranges, in zone order (the sources the data tier's security groups admit)."
  value       = aws_subnet.private[*].cidr_block
}

output "data_subnet_cidrs" {
  description = "The data subnets' ranges, in zone order."
  value       = aws_subnet.data[*].cidr_block
}

output "private_route_table_ids" {
  description = "The private tier's route tables, one per zone: where routes to the other regions go."
  value       = aws_route_table.private[*].id
}

output "data_route_table_id" {
  description = "The data tier's route table: where routes to the other regions' data tiers go."
  value       = aws_route_table.data.id
}
